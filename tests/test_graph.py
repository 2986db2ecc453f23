"""The task DAG: order, waves, critical path, descendants and cycles."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetdeck.config import parse_fleet
from fleetdeck.graph import CycleError, Dag, build_dag


def dag(graph: Mapping[str, Sequence[str]]) -> Dag:
    """A DAG from `{task: [its dependencies]}`, in the dict's order."""
    return build_dag(list(graph), [list(deps) for deps in graph.values()])


def levels_by_id(d: Dag) -> dict[str, int]:
    return {d.ids[node]: level for node, level in enumerate(d.levels)}


def assert_topological(d: Dag) -> None:
    """`topo` is a permutation of the nodes with every dependency before its dependent."""
    assert sorted(d.topo) == list(range(len(d)))
    position = {node: place for place, node in enumerate(d.topo)}
    for node, deps in enumerate(d.deps):
        for dep in deps:
            assert position[dep] < position[node], (d.ids[dep], d.ids[node])


def assert_levels_consistent(d: Dag) -> None:
    """A node's wave is 0 without dependencies, else one past its deepest dependency."""
    for node, deps in enumerate(d.deps):
        expected = 1 + max(d.levels[dep] for dep in deps) if deps else 0
        assert d.levels[node] == expected, d.ids[node]
    assert d.depth == (max(d.levels) + 1 if len(d) else 0)


def assert_edges_mirrored(d: Dag) -> None:
    """`dependents` is exactly the reverse of `deps`."""
    forward = {(dep, node) for node, deps in enumerate(d.deps) for dep in deps}
    backward = {(node, child) for node, kids in enumerate(d.dependents) for child in kids}
    assert forward == backward


def assert_closed_cycle(cycle: list[str], graph: Mapping[str, Sequence[str]]) -> None:
    """`cycle` is closed, visits no task twice, and each step is a real dependency
    (`x -> y` reads "x depends on y")."""
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for here, there in itertools.pairwise(cycle):
        assert there in graph[here], f"{here} does not depend on {there}"


# --- order and waves ----------------------------------------------------------------


def test_chain() -> None:
    d = dag({"a": [], "b": ["a"], "c": ["b"], "d": ["c"]})
    assert list(d.topo) == [0, 1, 2, 3]
    assert list(d.levels) == [0, 1, 2, 3]
    assert d.depth == 4
    assert len(d) == 4


def test_chain_declared_backwards() -> None:
    """Config order does not have to be dependency order."""
    d = dag({"d": ["c"], "c": ["b"], "b": ["a"], "a": []})
    assert [d.ids[node] for node in d.topo] == ["a", "b", "c", "d"]
    assert levels_by_id(d) == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_diamond() -> None:
    d = dag({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert_topological(d)
    assert list(d.levels) == [0, 1, 1, 2]
    assert d.depth == 3


def test_uneven_diamond_takes_the_deepest_dependency() -> None:
    """d waits on a directly and on a through b and c: its wave follows the longer arm."""
    d = dag({"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]})
    assert levels_by_id(d) == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert_topological(d)


def test_fan_out_and_fan_in() -> None:
    out = dag({"root": [], **{f"leaf{i}": ["root"] for i in range(5)}})
    assert list(out.levels) == [0, 1, 1, 1, 1, 1]
    assert out.depth == 2
    assert out.dependents[0] == (1, 2, 3, 4, 5)

    into = dag({**{f"src{i}": [] for i in range(5)}, "sink": [f"src{i}" for i in range(5)]})
    assert list(into.levels) == [0, 0, 0, 0, 0, 1]
    assert into.deps[5] == (0, 1, 2, 3, 4)
    assert into.topo[-1] == 5


def test_disconnected_parts_have_independent_waves() -> None:
    d = dag(
        {
            "x1": [],
            "y1": [],
            "x2": ["x1"],
            "lonely": [],
            "x3": ["x2"],
            "y2": ["y1"],
        }
    )
    assert levels_by_id(d) == {"x1": 0, "y1": 0, "x2": 1, "lonely": 0, "x3": 2, "y2": 1}
    assert d.depth == 3
    assert_topological(d)
    assert_edges_mirrored(d)


def test_ids_index_and_edges() -> None:
    d = dag({"a": [], "b": ["a"], "c": ["a", "b"]})
    assert d.ids == ("a", "b", "c")
    assert dict(d.index) == {"a": 0, "b": 1, "c": 2}
    assert d.deps == ((), (0,), (0, 1))
    assert d.dependents == ((1, 2), (2,), ())


def test_empty_graph() -> None:
    d = build_dag([], [])
    assert len(d) == 0
    assert list(d.topo) == []
    assert d.depth == 0
    assert list(d.critical_path()) == []
    assert d.critical_path_length() == 0


def test_repeated_dependency_is_not_a_cycle() -> None:
    """build_dag is also used for fleets built in code, where nothing deduplicates."""
    d = dag({"a": [], "b": ["a", "a"], "c": ["b"]})
    assert list(d.levels) == [0, 1, 2]
    assert_topological(d)


def test_topo_position_inverts_topo() -> None:
    d = dag({"c": ["b"], "b": ["a"], "a": [], "z": []})
    position = d.topo_position
    for place, node in enumerate(d.topo):
        assert position[node] == place


# --- critical path --------------------------------------------------------------------


def test_critical_path_counts_hops_to_the_end_of_the_longest_chain() -> None:
    chain = dag({"a": [], "b": ["a"], "c": ["b"]})
    assert list(chain.critical_path()) == [3, 2, 1]
    assert chain.critical_path_length() == 3

    diamond = dag({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert list(diamond.critical_path()) == [3, 2, 2, 1]

    # a -> b -> c is longer than a -> e; the lonely task is a chain of one.
    mixed = dag({"a": [], "b": ["a"], "c": ["b"], "e": ["a"], "lonely": []})
    assert list(mixed.critical_path()) == [3, 2, 1, 1, 1]
    assert mixed.critical_path_length() == 3


def test_weighted_critical_path() -> None:
    diamond = dag({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    # a=1, b=5, c=2, d=1: below a the heavier arm is b (5 + 1).
    assert list(diamond.critical_path([1, 5, 2, 1])) == [7, 6, 3, 1]
    assert diamond.critical_path_length([1, 5, 2, 1]) == 7


def test_weights_can_make_a_short_chain_critical() -> None:
    """By hops a -> b -> c -> d is longest; by duration the single slow task e is."""
    d = dag({"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "e": ["a"]})
    assert d.critical_path()[0] == 4
    weights = [1.0, 1.0, 1.0, 1.0, 10.0]
    assert list(d.critical_path(weights)) == [11, 3, 2, 1, 10]
    assert d.critical_path_length(weights) == 11


def test_critical_path_length_spans_disconnected_parts() -> None:
    d = dag({"a": [], "b": ["a"], "heavy": []})
    assert d.critical_path_length() == 2
    assert d.critical_path_length([1.0, 1.0, 5.0]) == 5


# --- descendants -------------------------------------------------------------------------


def test_descendants_in_topological_order() -> None:
    d = dag({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "other": []})
    ids = d.ids
    assert [ids[n] for n in d.descendants(d.index["a"])] in (["b", "c", "d"], ["c", "b", "d"])
    assert [ids[n] for n in d.descendants(d.index["b"])] == ["d"]
    assert d.descendants(d.index["d"]) == []
    assert d.descendants(d.index["other"]) == []


def test_descendants_follow_topo_even_against_config_order() -> None:
    # Declared deepest first so config order and topological order disagree.
    d = dag({"e": ["d"], "d": ["c", "b"], "c": ["b"], "b": ["a"], "a": [], "x": ["a"]})
    found = [d.ids[n] for n in d.descendants(d.index["b"])]
    assert found == ["c", "d", "e"]
    found_from_a = d.descendants(d.index["a"])
    assert {d.ids[n] for n in found_from_a} == {"b", "c", "d", "e", "x"}
    position = d.topo_position
    assert [position[n] for n in found_from_a] == sorted(position[n] for n in found_from_a)


# --- cycles --------------------------------------------------------------------------------


def test_self_loop() -> None:
    with pytest.raises(CycleError) as caught:
        dag({"a": ["a"]})
    assert caught.value.cycle == ["a", "a"]
    assert str(caught.value) == "dependency cycle: a -> a"


def test_two_cycle() -> None:
    graph = {"ok": [], "a": ["b"], "b": ["a"]}
    with pytest.raises(CycleError) as caught:
        dag(graph)
    assert caught.value.cycle == ["a", "b", "a"]
    assert isinstance(caught.value, ValueError)


def test_long_cycle_hidden_behind_an_acyclic_prefix() -> None:
    """Tasks downstream of the loop are stuck too, but are not part of it: the walk
    must not report them, nor the healthy tasks before it."""
    graph: dict[str, list[str]] = {}
    for i in range(5):  # a healthy chain that runs fine
        graph[f"pre{i}"] = [f"pre{i - 1}"] if i else []
    graph["tail"] = ["pre4", "loop3"]  # stuck behind the loop, declared before it
    for i in range(8):  # loop0 -> loop1 -> ... -> loop7 -> loop0
        graph[f"loop{i}"] = [f"loop{(i + 1) % 8}"]
    graph["loop5"].append("pre2")  # an extra way into the healthy part
    with pytest.raises(CycleError) as caught:
        dag(graph)
    cycle = caught.value.cycle
    assert_closed_cycle(cycle, graph)
    assert set(cycle) == {f"loop{i}" for i in range(8)}
    assert len(cycle) == 9


def test_config_reports_the_cycle_as_a_readable_path() -> None:
    from fleetdeck.config import ConfigError

    text = '[agents.c]\ncommand = ["x"]\n' + "".join(
        f'[[tasks]]\nid = "{name}"\nagent = "c"\ndepends_on = ["{dep}"]\n'
        for name, dep in (("a", "b"), ("b", "c"), ("c", "a"))
    )
    with pytest.raises(ConfigError) as caught:
        parse_fleet(text)
    (problem,) = caught.value.problems
    assert problem.message == "dependency cycle: a -> b -> c -> a"
    assert problem.path == "tasks[0].depends_on"


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_random_graphs_either_build_correctly_or_name_a_real_cycle(data: st.DataObject) -> None:
    """Any dependency graph: if it is acyclic the DAG is consistent; if not, the
    reported cycle is a real closed loop of dependencies."""
    n = data.draw(st.integers(min_value=1, max_value=12))
    names = [f"t{i}" for i in range(n)]
    graph = {
        name: data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True)) for name in names
    }
    try:
        d = dag(graph)
    except CycleError as exc:
        assert_closed_cycle(exc.cycle, graph)
        return
    assert_topological(d)
    assert_levels_consistent(d)
    assert_edges_mirrored(d)


@settings(max_examples=100, deadline=None, database=None)
@given(st.data())
def test_random_dags_never_raise(data: st.DataObject) -> None:
    """Edges that only point back in a hidden order can never form a cycle."""
    n = data.draw(st.integers(min_value=1, max_value=15))
    order = data.draw(st.permutations(list(range(n))))
    graph: dict[str, list[str]] = {f"t{node}": [] for node in range(n)}
    for rank in range(1, n):
        earlier = data.draw(st.lists(st.integers(0, rank - 1), max_size=3, unique=True))
        graph[f"t{order[rank]}"] = [f"t{order[r]}" for r in earlier]
    d = dag(graph)
    assert_topological(d)
    assert_levels_consistent(d)
    below = d.critical_path()
    for node in range(n):
        longest_child = max((below[c] for c in d.dependents[node]), default=0)
        assert below[node] == 1 + longest_child


# --- scale (correctness only; timings belong in benchmarks/) -----------------------------

SCALE = 20_000


def random_dag(seed: int, n: int) -> tuple[list[str], list[list[str]]]:
    """n tasks, each depending on up to 3 earlier ones, shuffled so config order is
    not dependency order."""
    rng = random.Random(seed)
    ids = [f"t{i}" for i in range(n)]
    deps = [[ids[j] for j in rng.sample(range(i), min(i, rng.randint(0, 3)))] for i in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    return [ids[i] for i in order], [deps[i] for i in order]


def test_twenty_thousand_task_dag() -> None:
    ids, deps = random_dag(seed=20_000, n=SCALE)
    d = build_dag(ids, deps)
    assert len(d) == SCALE
    assert_topological(d)
    assert_levels_consistent(d)
    assert_edges_mirrored(d)
    below = d.critical_path()
    for node in range(SCALE):
        longest_child = max((below[c] for c in d.dependents[node]), default=0)
        assert below[node] == 1 + longest_child
    # Unweighted, the longest chain has exactly one node per wave.
    assert d.critical_path_length() == d.depth


def test_twenty_thousand_long_chain_and_cycle_need_no_recursion() -> None:
    ids = [f"t{i}" for i in range(SCALE)]
    chain = build_dag(ids, [[]] + [[ids[i - 1]] for i in range(1, SCALE)])
    assert chain.depth == SCALE
    assert chain.levels[-1] == SCALE - 1
    assert len(chain.descendants(0)) == SCALE - 1
    assert chain.critical_path()[0] == SCALE

    ring = [[ids[(i + 1) % SCALE]] for i in range(SCALE)]
    with pytest.raises(CycleError) as caught:
        build_dag(ids, ring)
    assert len(caught.value.cycle) == SCALE + 1
    assert caught.value.cycle[0] == caught.value.cycle[-1]


def test_twenty_thousand_task_config() -> None:
    ids, deps = random_dag(seed=7, n=SCALE)
    parts = ['[agents.coder]\ncommand = ["echo", "{prompt}"]\nslots = 4\n']
    for task_id, task_deps in zip(ids, deps, strict=True):
        listed = ", ".join(f'"{dep}"' for dep in task_deps)
        parts.append(f'[[tasks]]\nid = "{task_id}"\nagent = "coder"\ndepends_on = [{listed}]\n')
    fleet = parse_fleet("".join(parts), source="big.toml")
    assert len(fleet.tasks) == SCALE
    assert [t.id for t in fleet.tasks] == ids
    d = fleet.dag
    assert len(d) == SCALE
    assert [[d.ids[dep] for dep in node_deps] for node_deps in d.deps] == deps
    assert_topological(d)
    assert_levels_consistent(d)
