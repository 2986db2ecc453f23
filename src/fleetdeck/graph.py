"""The task DAG: cycle detection, levels (waves) and critical path, all in O(V + E).

Nodes are integers (positions in config order) so that a 100,000-task graph stays
small in memory and fast to walk; `Dag.ids` maps them back to task ids. Node
numbers above 256 are objects of their own in Python (32 bytes each): every
structure here shares one object per node, and what is one number per node is
an array.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class CycleError(ValueError):
    """The dependencies loop back on themselves; `cycle` is the loop, closed."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


@dataclass(slots=True, frozen=True)
class Dag:
    """An acyclic dependency graph over tasks in config order.

    `deps[i]` are the nodes node i depends on, `dependents[i]` the nodes that depend
    on it, `topo` one topological order, `levels[i]` the wave of node i (0 when it
    has no dependencies, else one more than its deepest dependency).
    """

    ids: tuple[str, ...]
    index: Mapping[str, int]
    deps: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    topo: Sequence[int]  # an array: read it, do not change it
    levels: Sequence[int]  # an array too

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def depth(self) -> int:
        """How many waves the graph has."""
        return max(self.levels) + 1 if self.levels else 0

    def critical_path(self, weights: Sequence[float] | None = None) -> array[float]:
        """Longest weighted path from each node to a sink, the node itself included.

        With no weights every node weighs 1, so this is the hop count to the end of
        the longest chain below the node: the estimate used when nothing better is
        known.
        """
        n = len(self.ids)
        weight = weights if weights is not None else array("d", [1.0]) * n
        remaining = array("d", [0.0]) * n
        dependents = self.dependents
        for node in reversed(self.topo):
            longest_below = 0.0
            for child in dependents[node]:
                if remaining[child] > longest_below:
                    longest_below = remaining[child]
            remaining[node] = weight[node] + longest_below
        return remaining

    def critical_path_length(self, weights: Sequence[float] | None = None) -> float:
        """The length of the longest weighted chain in the whole graph."""
        return max(self.critical_path(weights), default=0.0)

    def descendants(self, node: int) -> list[int]:
        """Every node downstream of `node`, in topological order."""
        seen = {node}
        stack = [node]
        found: list[int] = []
        while stack:
            for child in self.dependents[stack.pop()]:
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    stack.append(child)
        position = self.topo_position
        found.sort(key=position.__getitem__)
        return found

    @property
    def topo_position(self) -> list[int]:
        """`topo_position[node]` is the node's place in `topo`."""
        position = [0] * len(self.topo)
        for place, node in enumerate(self.topo):
            position[node] = place
        return position


def build_dag(ids: Sequence[str], depends_on: Sequence[Sequence[str]]) -> Dag:
    """Build the DAG of tasks `ids` where task i depends on `depends_on[i]`.

    Every name in `depends_on` must be one of `ids` (the config checks that first,
    with friendlier messages). Raises CycleError naming one cycle.
    """
    index = {task_id: i for i, task_id in enumerate(ids)}
    n = len(ids)
    # The node numbers, one object each, shared below (ids are unique here: the
    # config checks that first).
    nodes = tuple(index.values())
    deps = tuple(tuple(index[name] for name in names) for names in depends_on)
    children: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for node, node_deps in zip(nodes, deps, strict=True):
        indegree[node] = len(node_deps)
        for dep in node_deps:
            children[dep].append(node)

    # Kahn's algorithm; levels fall out of it because a node is released only
    # after all of its dependencies have been placed.
    levels = array("l", [0]) * n
    queue = deque(node for node in nodes if indegree[node] == 0)
    topo = array("l")
    while queue:
        node = queue.popleft()
        topo.append(node)
        next_level = levels[node] + 1
        for child in children[node]:
            if levels[child] < next_level:
                levels[child] = next_level
            indegree[child] -= 1
            if indegree[child] == 0:
                queue.append(child)

    if len(topo) < n:
        raise CycleError([ids[node] for node in _find_cycle(deps, indegree)])
    return Dag(
        ids=tuple(ids),
        index=index,
        deps=deps,
        dependents=tuple(tuple(c) for c in children),
        topo=topo,
        levels=levels,
    )


def _find_cycle(deps: Sequence[Sequence[int]], indegree: Sequence[int]) -> list[int]:
    """One closed cycle among the nodes Kahn's algorithm could not place.

    Each unplaced node still waits on at least one unplaced dependency, so walking
    from any of them along unplaced dependencies must come back to a node already
    on the walk.
    """
    start = next(node for node, count in enumerate(indegree) if count > 0)
    walk: list[int] = []
    position: dict[int, int] = {}
    node = start
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = next(dep for dep in deps[node] if indegree[dep] > 0)
    cycle = walk[position[node] :]
    return [*cycle, node]
