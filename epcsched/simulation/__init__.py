"""Offline simulations: replay a workload through the real policy core on a simulated clock.

`epcsched simulate SCENARIO.yaml` loads a scenario (`scenario`), builds its pods (`workload`),
runs each policy (`engine`, placing through `placer` with the baselines of `baselines`), spreads
the runs over processes or Dask (`sweep`), computes a proven lower bound on nodes (`bound`) and
writes `results.json`, `summary.md` and plots (`report`). `live` checks the extender over HTTP
decides as the simulator did; `demo` is the simulation part of `make demo`.
"""
