"""Mutation testing of the policy core, the lower bound and the extender's wire and service code.

`make mutation` runs mutmut over each target file against the tests that cover it and writes
`benchmarks/mutation/REPORT.md`: killed, survived and equivalent mutants per file, each survivor
with a one-line reason, and the date and commit each file was measured at. It is not part of
`make test`: a full run takes much longer than the suite.

Why a driver rather than a `[tool.mutmut]` table: other agents run tests from the same checkout,
so every mutant runs in a private copy (`--workdir`, default /tmp/mut-work), one copy per target
so each file gets its own test selection and mutmut cache; and survivors need matching against
`benchmarks/mutation/equivalents.yaml`, which mutmut does not do.

- `make mutation` or `.venv/bin/python benchmarks/mutation.py [--only score.py bound.py]`
  runs targets (by path suffix), stores `results/<file>.json` and regenerates the report from
  every stored result, so a partial run updates only its rows.
- `--baseline` stores the run as the "before" figures instead (`baseline/<file>.json`).
- `--report-only` rebuilds REPORT.md from stored results (after editing equivalents.yaml).
- `--seeds 10 --sample 40 --only plan.py bound.py` runs the hypothesis properties alone under
  ten seeds (profile `seeded`) against the mutants they catch under the `ci` profile (an even
  sample of the killed ones), and records in `seeds/<file>.json` which they catch on every seed.
- `--recheck --only bound.py` re-runs, at HEAD, only the mutants the stored whole-file run
  left alive (refused when the file itself changed since), for the tests added after it.
- `--functions x__scale_down x__drain` measures only those functions' mutants (stored under
  `functions/`), for files whose whole run takes hours; `--resume` goes on after an interruption.

What is measured is a commit (`--ref`, HEAD by default), never the shared work tree, so other
agents' uncommitted work cannot change a figure; `--worktree` measures the tree as it is.
Mutants run with the `ci` hypothesis profile (tests/conftest.py), so a run is repeatable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]
    properties: tuple[str, ...] = ()
    """Property tests (node ids) whose strength `--seeds` measures."""


# Each file against the tests that exercise it; mutmut then runs, for each mutant, only the
# selected tests that reached the mutated function, fastest first.
TARGETS = (
    Target("epcsched/core/requests.py", ("tests/test_requests.py", "tests/test_request_edges.py")),
    Target(
        "epcsched/core/score.py",
        (
            "tests/test_fit_score.py",
            "tests/test_score_edges.py",
            "tests/test_extender_http.py",
            "tests/test_extender_ahead.py",
        ),
    ),
    Target(
        "epcsched/core/fit.py",
        (
            "tests/test_fit_score.py",
            "tests/test_fit_edges.py",
            "tests/test_rules.py",
            "tests/test_extender_http.py",
            "tests/test_extender_preempt.py",
        ),
    ),
    Target(
        "epcsched/simulation/bound.py",
        ("tests/test_simulation_bound.py", "tests/test_bound_edges.py"),
        properties=(
            "tests/test_simulation_bound.py::test_l2_never_exceeds_the_optimum",
            "tests/test_simulation_bound.py::test_the_bound_never_exceeds_a_run_in_which_no_pod_waited",
            "tests/test_bound_edges.py::test_the_bound_is_the_brute_force_peak_on_boundary_workloads",
        ),
    ),
    Target(
        "epcsched/extender/wire.py",
        (
            "tests/test_wire.py",
            "tests/test_wire_edges.py",
            "tests/test_extender_names.py",
            "tests/test_extender_fuzz.py",
            "tests/test_extender_http.py",
            "tests/test_extender_preempt.py",
            "tests/test_extender_cover.py",
            "tests/test_bind.py",
        ),
    ),
    Target(
        "epcsched/core/rules.py",
        (
            "tests/test_rules.py",
            "tests/test_rules_edges.py",
            "tests/test_fit_score.py",
            "tests/test_fit_edges.py",
        ),
    ),
    Target(
        "epcsched/core/placement.py",
        (
            "tests/test_placement_edges.py",
            "tests/test_rules.py",
            "tests/test_rules_edges.py",
            "tests/test_plan.py",
            "tests/test_plan_properties.py",
            "tests/test_plan_refusals.py",
            "tests/test_fit_score.py",
        ),
    ),
    Target(
        "epcsched/core/snapshot.py",
        (
            "tests/test_snapshot_edges.py",
            "tests/test_snapshot_incremental.py",
            "tests/test_score_edges.py",
            "tests/test_extender_cache_edges.py",
            "tests/test_extender_repeat_caches.py",
            "tests/test_informer_caches.py",
            "tests/test_bind.py",
            "tests/test_plan.py",
            "tests/test_plan_refusals.py",
            "tests/test_fit_score.py",
            "tests/test_fit_edges.py",
            "tests/test_rules.py",
            "tests/test_extender_http.py",
        ),
    ),
    Target(
        "epcsched/core/plan.py",
        (
            "tests/test_plan.py",
            "tests/test_plan_properties.py",
            "tests/test_plan_refusals.py",
            "tests/test_plan_edges.py",
            "tests/test_autoscale_core.py",
            "tests/test_autoscale_edges.py",
        ),
        properties=(
            "tests/test_plan_properties.py::test_plans_obey_the_rules_sizes_and_drains",
            "tests/test_plan_properties.py::test_removed_nodes_pods_fit_on_the_nodes_that_remain",
            "tests/test_plan_properties.py::test_the_same_cluster_in_another_order_gives_the_same_plan",
            "tests/test_plan.py::test_plans_stay_within_min_and_max_and_leave_the_snapshot_alone",
        ),
    ),
    Target(
        "epcsched/core/autoscale.py",
        (
            "tests/test_autoscale_edges.py",
            "tests/test_autoscale_core.py",
            "tests/test_plan.py",
            "tests/test_plan_refusals.py",
        ),
    ),
    Target(
        "epcsched/extender/service.py",
        (
            "tests/test_service_edges.py",
            "tests/test_extender_http.py",
            "tests/test_extender_fuzz.py",
            "tests/test_extender_preempt.py",
            "tests/test_extender_names.py",
            "tests/test_extender_kube_scheduler.py",
            "tests/test_extender_cache_edges.py",
            "tests/test_extender_repeat_caches.py",
            "tests/test_extender_ahead.py",
            "tests/test_extender_cover.py",
            "tests/test_wire.py",
        ),
    ),
    Target(
        "epcsched/extender/cover.py",
        (
            "tests/test_cover_edges.py",
            "tests/test_extender_cover.py",
            "tests/test_extender_names.py",
            "tests/test_extender_repeat_caches.py",
        ),
    ),
    Target(
        "epcsched/extender/fastpath.py",
        (
            "tests/test_extender_fastpath.py",
            "tests/test_extender_http.py",
            "tests/test_extender_tls.py",
        ),
    ),
)

# mutmut's exit-code classes (mutmut.stats.status_by_exit_code), folded into the report's.
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout"}
KILLED |= {255: "timeout", 37: "killed", -9: "killed", -11: "killed"}


def status_of(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code == 0:
        return "survived"
    if code in (5, 33):
        return "no tests"
    return "suspicious"


def slug(path: str) -> str:
    return path.replace("epcsched/", "").replace("/", "_").removesuffix(".py")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def snapshot(dest: Path, ref: str | None) -> dict[str, Any]:
    """Copy the package, the tests and pyproject.toml as they are in the work tree (or, with
    `ref`, as they were at that commit: how the "before" figures are measured)."""
    if ref is not None:
        archive = subprocess.run(
            ["git", "archive", ref, "epcsched", "tests", "pyproject.toml"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return {"commit": git("rev-parse", ref), "dirty": []}
    listed = git(
        "ls-files", "-c", "-o", "--exclude-standard", "epcsched", "tests", "pyproject.toml"
    )
    for name in listed.splitlines():
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    dirty = git("status", "--porcelain", "--untracked-files=no", "epcsched", "tests")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": sorted(line[3:] for line in dirty.splitlines()),
    }


def mutmut_config(target: Target, tests: tuple[str, ...], extra: tuple[str, ...]) -> str:
    # Workers fork from mutmut's main process, after the clean run. A module-level cache in
    # the code under test that the clean run filled would hide a mutant behind its hits (the
    # request cache in objects.py that was uncommitted on 2026-12-01 was one: measure commits,
    # not the work tree). mutmut's forkserver isolation avoids that, but here it ran about ten
    # times slower and timed mutants out.
    lines = ["[mutmut]", "source_paths=epcsched/", f"only_mutate={target.path}"]
    lines.append("pytest_add_cli_args_test_selection=")
    lines += [f"    {test}" for test in tests]
    lines.append("pytest_add_cli_args=")
    lines += [f"    {arg}" for arg in ("-p", "no:cacheprovider", *extra)]
    return "\n".join(lines) + "\n"


def run_mutmut(
    work: Path,
    target: Target,
    *,
    tests: tuple[str, ...],
    workers: int,
    profile: str,
    extra: tuple[str, ...] = (),
    names: tuple[str, ...] = (),
) -> tuple[dict[str, int | None], float, tuple[str, ...]]:
    # A test file not written yet (an older commit, a baseline run) is left out, not an error.
    tests = tuple(t for t in tests if (work / t.partition("::")[0]).exists())
    (work / "setup.cfg").write_text(mutmut_config(target, tests, extra))
    # mutants/ must exist before Python starts, or the import system caches its absence.
    (work / "mutants").mkdir(exist_ok=True)
    env = dict(os.environ)
    # Subprocesses a test starts import the mutated package too.
    env["PYTHONPATH"] = str(work / "mutants")
    env["EPCSCHED_HYPOTHESIS_PROFILE"] = profile
    env.pop("CI", None)
    started = time.monotonic()
    with open(work / "mutmut.log", "ab") as log:
        proc = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(workers), *names],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.monotonic() - started
    meta = work / "mutants" / (target.path + ".meta")
    if proc.returncode != 0 or not meta.exists():
        raise SystemExit(
            f"mutmut failed on {target.path} (exit {proc.returncode}): see {work}/mutmut.log"
        )
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes, seconds, tests


FUNCTION = re.compile(r"\.x(?:ǁ(?P<cls>[^ǁ]+)ǁ|_)(?P<fn>.+)__mutmut_\d+$")


def function_of(name: str) -> str:
    match = FUNCTION.search(name)
    if match is None:
        return name
    return f"{match['cls']}.{match['fn']}" if match["cls"] else match["fn"]


# Joins the lines of a mutation that spans several (code holds " / " often, this never).
JOIN = " ⏎ "


# Run inside the work directory: mutmut reads its configuration and mutants from the cwd.
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, names = sys.argv[1], json.loads(sys.stdin.read())
print(json.dumps({name: get_diff_for_mutant(name, path=path) for name in names}))
"""


def diffs_of(work: Path, path: str, names: list[str]) -> dict[str, tuple[str, str]]:
    """Each mutant's changed lines (before, after), in one process for all of them."""
    if not names:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", _DIFFS, path],
        cwd=work,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = {}
    for name, diff in json.loads(shown).items():
        lines = diff.splitlines()
        before = [ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")]
        after = [ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
        out[name] = (JOIN.join(before), JOIN.join(after))
    return out


def line_of(source: list[str], function: str, before: str) -> int | None:
    """The 1-based line the mutation changed: the first match after the function's `def`."""
    first = before.split(JOIN)[0]
    name = function.rpartition(".")[2]
    start = next(
        (i for i, text in enumerate(source) if re.search(rf"\bdef {re.escape(name)}\(", text)), 0
    )
    for i in range(start, len(source)):
        if source[i].strip() == first:
            return i + 1
    return None


def load_equivalents() -> list[dict[str, str]]:
    path = OUT / "equivalents.yaml"
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or []
    return list(data)


def reason_for(
    equivalents: list[dict[str, str]], path: str, function: str, before: str, after: str
) -> dict[str, str] | None:
    for entry in equivalents:
        if (
            entry["file"] == path
            and entry["function"] == function
            and entry["before"].strip() == before
            and entry["after"].strip() == after
        ):
            return entry
    return None


def measure(target: Target, args: argparse.Namespace, base: Path, meta: dict[str, Any]) -> None:
    work = base / slug(target.path)
    if not (args.resume and (work / "mutants").exists()):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base / "snapshot", work)
    print(f"{target.path}: mutating in {work}", flush=True)
    module = target.path.removesuffix(".py").replace("/", ".")
    # Only these functions' mutants (mutmut's mangled names: `x_plan`, `xǁClassǁmethod`).
    names = tuple(f"{module}.{f}__mutmut_*" for f in args.functions)
    codes, seconds, tests = run_mutmut(
        work, target, tests=target.tests, workers=args.workers, profile="ci", names=names
    )
    if names:
        codes = {n: c for n, c in codes.items() if any(fnmatch(n, p) for p in names)}
    source = (work / target.path).read_text().splitlines()
    alive = [name for name, code in codes.items() if status_of(code) != "killed"]
    diffs = diffs_of(work, target.path, alive)
    mutants = []
    for name, code in sorted(codes.items(), key=lambda item: natural(item[0])):
        status = status_of(code)
        entry: dict[str, Any] = {"name": name, "function": function_of(name), "status": status}
        if status != "killed":
            entry["before"], entry["after"] = diffs[name]
            entry["line"] = line_of(source, entry["function"], entry["before"])
        mutants.append(entry)
    result = {
        "file": target.path,
        "tests": list(tests),
        "functions": list(args.functions),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
        "workers": args.workers,
        "mutmut": mutmut_version(),
        **meta,
        "mutants": mutants,
    }
    folder = OUT / ("baseline" if args.baseline else "results")
    if args.functions:
        folder = folder / "functions"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{slug(target.path)}.json").write_text(json.dumps(result, indent=1) + "\n")
    counts = summarise(result, load_equivalents())
    print(
        f"{target.path}: {counts['total']} mutants, {counts['killed']} killed, "
        f"{counts['equivalent']} equivalent, {counts['survived']} survived "
        f"({counts['rate']:.1f}% of non-equivalent) in {seconds:.0f} s",
        flush=True,
    )


def recheck(target: Target, args: argparse.Namespace, base: Path, meta: dict[str, Any]) -> None:
    """Run again, against `meta`'s commit, only the mutants a stored whole-file run left alive.

    Valid only while the file under test is what that run mutated (checked with git: the
    mutants are then the same, by name and by change) and tests were only added or
    strengthened, so a mutant killed then is killed now. The row then names both commits.
    """
    path = OUT / "results" / f"{slug(target.path)}.json"
    if not path.exists():
        raise SystemExit(f"--recheck {target.path}: no stored whole-file run to recheck")
    stored = json.loads(path.read_text())
    first = stored.get("recheck", {}).get("full_commit", stored["commit"])
    changed = subprocess.run(
        ["git", "diff", "--quiet", first, meta["commit"], "--", target.path], cwd=ROOT, check=False
    )
    if changed.returncode != 0:
        raise SystemExit(
            f"--recheck {target.path}: the file changed since {first[:10]}; run it whole again"
        )
    # Mutants judged equivalent are left as they are: no test can kill them.
    equivalents = load_equivalents()
    alive = tuple(
        m["name"]
        for m in stored["mutants"]
        if m["status"] != "killed"
        and (
            (entry := reason_for(equivalents, target.path, m["function"], m["before"], m["after"]))
            is None
            or entry.get("kind", "equivalent") != "equivalent"
        )
    )
    work = base / (slug(target.path) + "-recheck")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base / "snapshot", work)
    print(f"{target.path}: re-running {len(alive)} non-equivalent survivors in {work}", flush=True)
    codes, seconds, tests = run_mutmut(
        work, target, tests=target.tests, workers=args.workers, profile="ci", names=alive
    )
    for mutant in stored["mutants"]:
        if mutant["name"] in alive:
            mutant["status"] = status_of(codes.get(mutant["name"]))
            if mutant["status"] == "killed":
                for key in ("before", "after", "line"):
                    mutant.pop(key, None)
    history = stored.get("recheck", {})
    stored["recheck"] = {
        "full_commit": first,
        "full_date": history.get("full_date", stored["date"]),
        "full_seconds": history.get("full_seconds", stored["seconds"]),
    }
    stored.update(
        commit=meta["commit"],
        dirty=meta["dirty"],
        tests=list(tests),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=round(stored["recheck"]["full_seconds"] + seconds, 1),
    )
    stored["recheck"]["rerun_seconds"] = round(seconds, 1)
    path.write_text(json.dumps(stored, indent=1) + "\n")
    counts = summarise(stored, load_equivalents())
    print(
        f"{target.path}: {counts['survived']} of {len(alive)} re-run survived "
        f"({counts['rate']:.1f}% of non-equivalent) in {seconds:.0f} s",
        flush=True,
    )


def natural(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("_")
    return head, int(number) if number.isdigit() else 0


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def summarise(result: dict[str, Any], equivalents: list[dict[str, str]]) -> dict[str, Any]:
    killed = equivalent = 0
    survivors = []
    for mutant in result["mutants"]:
        if mutant["status"] == "killed":
            killed += 1
            continue
        entry = reason_for(
            equivalents, result["file"], mutant["function"], mutant["before"], mutant["after"]
        )
        if entry is not None and entry.get("kind", "equivalent") == "equivalent":
            equivalent += 1
        survivors.append((mutant, entry))
    total = len(result["mutants"])
    live = total - equivalent
    survived = len(survivors) - equivalent
    return {
        "total": total,
        "killed": killed,
        "equivalent": equivalent,
        "survived": survived,
        "rate": 100.0 * survived / live if live else 0.0,
        "score": 100.0 * killed / live if live else 100.0,
        "survivors": survivors,
    }


def seeds(target: Target, args: argparse.Namespace, base: Path) -> None:
    """Which mutants the properties alone catch under `ci`, and under each of N seeds."""
    work = base / (slug(target.path) + "-seeds")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base / "snapshot", work)
    # The mutants some stored run killed: the whole file's, else its functions', else the
    # "before" run's (the mutants are the same while the file is; the tests are HEAD's).
    candidates = [
        OUT / kind / sub / f"{slug(target.path)}.json"
        for kind in ("results", "baseline")
        for sub in ("", "functions")
    ]
    stored = json.loads(next(p for p in candidates if p.exists()).read_text())
    killed = tuple(m["name"] for m in stored["mutants"] if m["status"] == "killed")
    if args.sample and len(killed) > args.sample:
        # An even spread over the file (mutants are numbered in source order), not the first N.
        step = len(killed) / args.sample
        killed = tuple(killed[int(i * step)] for i in range(args.sample))
    started = time.monotonic()
    ci, _, _ = run_mutmut(
        work, target, tests=target.properties, workers=args.workers, profile="ci", names=killed
    )
    caught = sorted(name for name in killed if status_of(ci.get(name)) == "killed")
    by_seed: dict[str, list[str]] = {}
    for seed in range(1, args.seeds + 1):
        shutil.rmtree(work / "mutants", ignore_errors=True)
        codes, _, _ = run_mutmut(
            work,
            target,
            tests=target.properties,
            workers=args.workers,
            profile="seeded",
            extra=(f"--hypothesis-seed={seed}",),
            names=tuple(caught),
        )
        by_seed[str(seed)] = sorted(n for n in caught if status_of(codes.get(n)) != "killed")
        print(f"{target.path} seed {seed}: missed {len(by_seed[str(seed)])} of {len(caught)}")
    out = OUT / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{slug(target.path)}.json").write_text(
        json.dumps(
            {
                "file": target.path,
                "properties": list(target.properties),
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "commit": git("rev-parse", "HEAD"),
                "seconds": round(time.monotonic() - started, 1),
                "sampled": len(killed),
                "caught_under_ci": caught,
                "missed_by_seed": by_seed,
            },
            indent=1,
        )
        + "\n"
    )


def report() -> None:
    equivalents = load_equivalents()
    lines = [
        "# Mutation testing report",
        "",
        "Written by `benchmarks/mutation.py` (`make mutation`); edit `equivalents.yaml`, not this",
        "file. Each file is measured at the date and commit on its row; a file not run says so.",
        "Score = killed / (all mutants - equivalent). Target: at most 5 % of non-equivalent",
        "mutants survive in each file. Timeouts count as killed. mutmut mutates functions and",
        "methods (not module constants, class bodies or decorated functions other than",
        "static/class methods).",
        "",
        "| file | mutants | equivalent | before: survived (score) | now: killed | now: survived "
        "| now: survivors % | now: score | run time now (before) | measured now; before |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    header = len(lines) - 2
    details: list[str] = []
    total_seconds = 0.0
    for sub in ("", "functions"):
        if sub:
            if not any((OUT / k / sub).exists() for k in ("results", "baseline")):
                continue
            lines += [
                "",
                "Files measured on some functions only (named on each row), where a whole-file "
                "run takes hours:",
                "",
                lines[header],
                lines[header + 1],
            ]
        for target in TARGETS:
            name = slug(target.path)
            now_path = OUT / "results" / sub / f"{name}.json"
            before_path = OUT / "baseline" / sub / f"{name}.json"
            if sub and not (now_path.exists() or before_path.exists()):
                continue
            label = f"`{target.path}`"
            for path in (now_path, before_path):
                if sub and path.exists():
                    label += " (" + ", ".join(json.loads(path.read_text())["functions"]) + ")"
                    break
            before = before_time = before_at = ""
            old: dict[str, Any] | None = None
            if before_path.exists():
                base_result = json.loads(before_path.read_text())
                old = summarise(base_result, equivalents)
                before = f"{old['survived']} ({old['score']:.1f} %)"
                before_time = f"{base_result['seconds']:.0f} s"
                before_at = f"{base_result['date']}, {base_result['commit'][:10]}"
            if not now_path.exists():
                total = f"{old['total']}" if old else "not run"
                equivalent = f"{old['equivalent']}" if old else ""
                lines.append(
                    f"| {label} | {total} | {equivalent} | {before or 'not run'} | not run "
                    f"| | | | ({before_time}) | ; {before_at} |"
                )
                continue
            result = json.loads(now_path.read_text())
            counts = summarise(result, equivalents)
            total_seconds += result["seconds"]
            dirty = " + uncommitted" if result["dirty"] else ""
            rerun = result.get("recheck")
            if rerun:
                # Killed mutants from the whole run, survivors re-run at the later commit.
                dirty += f" (whole file {rerun['full_date']}, {rerun['full_commit'][:10]})"
            lines.append(
                f"| {label} | {counts['total']} | {counts['equivalent']} | "
                f"{before or 'not run'} | {counts['killed']} | {counts['survived']} | "
                f"{counts['rate']:.1f} % | {counts['score']:.1f} % | {result['seconds']:.0f} s "
                f"({before_time}) | {result['date']}, {result['commit'][:10]}{dirty}; {before_at} |"
            )
            if counts["survivors"]:
                details.append(f"### {label}")
                details.append("")
                details.append("Tests: " + ", ".join(f"`{t}`" for t in result["tests"]))
                details.append("")
                for mutant, entry in counts["survivors"]:
                    kind = entry.get("kind", "equivalent") if entry else "NOT EXPLAINED"
                    reason = entry["reason"] if entry else "no reason recorded yet"
                    line = f"line {mutant['line']}" if mutant.get("line") else "line ?"
                    details.append(
                        f"- {line}, `{mutant['function']}` ({mutant['status']}, {kind}): "
                        f"`{mutant['before']}` → `{mutant['after']}` — {reason}"
                    )
                details.append("")
    lines += ["", f"Mutation run time, all measured files: {total_seconds / 60:.1f} min.", ""]
    seed_lines = []
    for target in TARGETS:
        path = OUT / "seeds" / f"{slug(target.path)}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        missed = data["missed_by_seed"]
        ever = sorted({n for names in missed.values() for n in names})
        seed_lines.append(
            f"- `{target.path}`: of {data.get('sampled', '?')} killed mutants (an even sample),"
            f" the properties alone catch {len(data['caught_under_ci'])} under `ci`; under "
            f"{len(missed)} seeds each, "
            f"{len(data['caught_under_ci']) - len(ever)} are caught on every seed"
            + (f", missed on some seed: {', '.join(f'`{n}`' for n in ever)}" if ever else "")
            + f" ({data['date']}, {data['commit'][:10]}, {data['seconds'] / 60:.0f} min)."
        )
    if seed_lines:
        lines += ["## Property tests under ten seeds", "", *seed_lines, ""]
    notes = OUT / "notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    lines += ["## Survivors", "", *details] if details else []
    (OUT / "REPORT.md").write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="target path suffixes to run")
    parser.add_argument("--workers", type=int, default=1, help="mutmut --max-children")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mut-work"))
    parser.add_argument(
        "--functions",
        nargs="*",
        default=[],
        help="only these functions' mutants, by mutmut's mangled name (x_plan, xǁClassǁmethod);"
        " stored apart, under functions/",
    )
    parser.add_argument("--baseline", action="store_true", help="store as the 'before' figures")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="go on with an interrupted run in --workdir"
    )
    parser.add_argument(
        "--ref",
        default="HEAD",
        help="measure the code and tests of this commit (default HEAD; other agents' uncommitted "
        "work stays out)",
    )
    parser.add_argument(
        "--worktree", action="store_true", help="measure the work tree as it is instead of --ref"
    )
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="re-run only the survivors of the stored whole-file run (the file must be unchanged)",
    )
    parser.add_argument("--seeds", type=int, default=0, help="measure properties under N seeds")
    parser.add_argument(
        "--sample", type=int, default=0, help="with --seeds: at most this many killed mutants"
    )
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or any(t.path.endswith(s) for s in args.only)]
    if not targets:
        parser.error(f"--only {' '.join(args.only)}: no target ends with that")
    if not args.report_only:
        base = args.workdir
        if args.resume and (base / "snapshot.json").exists():
            meta = json.loads((base / "snapshot.json").read_text())
        else:
            shutil.rmtree(base / "snapshot", ignore_errors=True)
            (base / "snapshot").mkdir(parents=True)
            meta = snapshot(base / "snapshot", None if args.worktree else args.ref)
            (base / "snapshot.json").write_text(json.dumps(meta))
        for target in targets:
            if args.seeds:
                if target.properties:
                    seeds(target, args, base)
            elif args.recheck:
                recheck(target, args, base, meta)
                report()
            else:
                measure(target, args, base, meta)
                report()
    report()


if __name__ == "__main__":
    main()
