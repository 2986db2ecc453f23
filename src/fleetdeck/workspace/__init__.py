"""Git workspaces: a worktree per task, its work committed, its change landed.

`checks` validates `[repo]` against the repository (for `fleetdeck validate` and
before a run), `git` runs the git command line, `worktrees` is the engine's
`Workspace` for a repository (a worktree and a branch per task), `train`
lands each task's branch on the target, one at a time, and `clean` removes what
ended tasks left (`fleetdeck clean`, `run --fresh`) without losing any work.
"""
