"""Running many simulations: one task per (sweep point, policy), on processes or on Dask.

Every task runs `run_task` wherever it lands: in this process, in a local process pool
(`--workers N`) or on a Dask cluster (`--dask ADDRESS`, through `Client.get_executor()`, which is
a `concurrent.futures.Executor` like the pool). Tasks carry the workload itself, so Dask workers
need no access to the scenario's files. Results come back in task order whatever the order of
completion, so the output does not depend on how the work was spread.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from tqdm import tqdm

from epcsched.simulation.engine import RunResult, simulate
from epcsched.simulation.scenario import Scenario
from epcsched.simulation.workload import Workload, load_workload


@dataclass(frozen=True, slots=True)
class Task:
    """One run to do: a scenario (already at its sweep point), its workload and a policy."""

    scenario: Scenario
    workload: Workload
    policy: str
    variant: str


def run_task(task: Task) -> RunResult:
    """Run one task; this is the function processes and Dask workers execute."""
    result = simulate(task.scenario, task.workload, task.policy)
    result.variant = task.variant
    return result


def plan_tasks(
    scenario: Scenario, policies: Sequence[str], *, workloads: dict[int, Workload] | None = None
) -> list[Task]:
    """The base run of every policy, then every sweep point's (in the scenario's order)."""
    cache = dict(workloads or {})

    def workload(seed: int) -> Workload:
        if seed not in cache:
            cache[seed] = load_workload(scenario.workload, seed)
        return cache[seed]

    tasks = [Task(scenario, workload(scenario.seed), p, "base") for p in policies]
    for variant in scenario.sweep:
        point = scenario.variant(variant)
        tasks += [Task(point, workload(variant.seed), p, variant.label()) for p in policies]
    return tasks


#: Seconds to wait for a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = 10


class DaskUnavailable(RuntimeError):
    """The Dask scheduler given with --dask cannot be reached or its address is malformed."""


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int = 1,
    dask_address: str | None = None,
    progress: bool | None = None,
    runner: Callable[[Task], RunResult] = run_task,
    dask_timeout: float = DASK_CONNECT_TIMEOUT,
) -> list[RunResult]:
    """Run `tasks` here, on `workers` processes, or on the Dask scheduler at `dask_address`
    (giving up after `dask_timeout` seconds without a connection)."""
    show = _progress_enabled() if progress is None else progress
    results: list[RunResult | None] = [None] * len(tasks)
    with ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(total=len(tasks), desc="simulating", unit="run", disable=not show, file=sys.stderr)
        )
        executor: cf.Executor | None = None
        if dask_address is not None:
            from distributed import Client

            try:
                client = stack.enter_context(
                    Client(  # type: ignore[no-untyped-call]
                        dask_address, set_as_default=False, timeout=dask_timeout
                    )
                )
            except (OSError, ValueError, TimeoutError) as exc:
                raise DaskUnavailable(
                    f"cannot reach the Dask scheduler at {dask_address!r}: {exc}"
                ) from None
            executor = client.get_executor()
        elif workers > 1 and len(tasks) > 1:
            # forkserver: workers must not be forked from a process that runs threads (tqdm's
            # monitor, a Dask client), whose locks a fork would copy in a held state.
            executor = stack.enter_context(
                cf.ProcessPoolExecutor(
                    max_workers=min(workers, len(tasks)),
                    mp_context=multiprocessing.get_context("forkserver"),
                )
            )
        if executor is None:
            for i, task in enumerate(tasks):
                results[i] = runner(task)
                bar.update()
        else:
            futures = {executor.submit(runner, task): i for i, task in enumerate(tasks)}
            for future in cf.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return [r for r in results if r is not None]
