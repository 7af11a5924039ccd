"""The pure core: RayCluster and pod (raw dicts) -> typed facts -> an immutable Plan -> JSON Patch ops.

Standard library only, no I/O, no clock: what the server, `render` and the tests all call (`mutation.mutate`).
"""
