"""No traceback reaches a user: every subcommand, every flag, a bad value, one line, exit code 2.

The table below gives each flag of each subcommand `epcsched --help` lists at least one bad
value, on top of an invocation that is otherwise valid (so the bad value is what is refused, not
a missing source). Each case must print exactly one line on stderr that names the flag (or the
config key or file behind it), nothing on stdout, and exit with 2. A test fails when a flag is
added without a case here, so the table cannot fall behind the commands.

Cases run `epcsched.cli.main` in this process (a traceback would fail the test as an exception);
a few run the real `python -m epcsched` to show the same at the process boundary. Cases that
need an API server use the fake one, run on its own event loop in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet

from epcsched.cli import build_parser, main
from epcsched.testing.apiserver import FakeApiServer
from tests.helpers import node, pod

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "simulations" / "tiny" / "scenario.yaml"

AUTOSCALER_CONFIG = """\
autoscaler:
  nodePools:
  - name: dcsv3
    provider: simulated
    minSize: 0
    maxSize: 3
    nodeSelector: {agentpool: dcsv3}
    template:
      resources: {sgx.intel.com/epc: 16Gi, cpu: "4", memory: 32Gi, pods: "110"}
      labels: {agentpool: dcsv3}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Valid inputs for every subcommand, the fake API server's kubeconfig, and bad inputs."""
    tmp = tmp_path_factory.mktemp("cli-errors")
    snap = tmp / "cluster.json"
    snap.write_text(
        json.dumps({"kind": "List", "items": [node("n1", "94Mi", labels={"agentpool": "dcsv3"})]})
    )
    pod_file = tmp / "pod.json"
    pod_file.write_text(json.dumps(pod("p", "64Mi")))
    pods_only = tmp / "pods.json"
    pods_only.write_text(json.dumps({"kind": "List", "items": [pod("p", "64Mi")]}))
    scaler = tmp / "autoscaler.yaml"
    scaler.write_text(AUTOSCALER_CONFIG)
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("extender: [\n")
    a_file = tmp / "a-file"
    a_file.write_text("not a directory\n")
    sysfs = tmp / "sysfs"
    (sysfs / "sys").mkdir(parents=True)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeApiServer()
    server.store.load_many([node("n1", "94Mi", labels={"agentpool": "dcsv3"}), pod("p", "64Mi")])
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
    try:
        yield {
            "snap": str(snap),
            "pod": str(pod_file),
            "pods_only": str(pods_only),
            "scaler": str(scaler),
            "bad_yaml": str(bad_yaml),
            "file": str(a_file),
            "under_file": str(a_file / "out"),
            "sysfs": str(sysfs),
            "kubeconfig": str(kubeconfig),
            "missing": str(tmp / "missing.yaml"),
            "out": str(tmp / "out"),
            "tiny": str(TINY),
        }
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# Valid invocations that the bad flag is added to (placeholders are `files` keys).
BASE: dict[str, list[str]] = {
    "extender": ["--snapshot", "{snap}", "--port", "0"],
    "extender-live": ["--kubeconfig", "{kubeconfig}", "--port", "0"],
    "autoscaler": ["--config", "{scaler}", "--snapshot", "{snap}", "--once", "--dry-run"],
    "autoscaler-live": ["--config", "{scaler}", "--kubeconfig", "{kubeconfig}", "--port", "0"],
    "explain": ["{pod}", "--snapshot", "{snap}"],
    "explain-live": ["default/p", "--kubeconfig", "{kubeconfig}"],
    "exporter": ["--sysfs-root", "{sysfs}", "--node-name", "n1", "--port", "0"],
    "metrics-api": [
        "--kubeconfig",
        "{kubeconfig}",
        "--prometheus-url",
        "http://127.0.0.1:9",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ],
    "simulate": ["{tiny}", "--out", "{out}", "--policies", "binpack"],
}

# (base, flag, bad arguments, what the one line must mention). A flag whose every value is
# valid (a name, an identity) gets a malformed use instead: the value left out.
CASES: list[tuple[str, str, list[str], str] | ParameterSet] = [
    # extender
    ("extender", "--snapshot", ["--snapshot", "{missing}"], "missing.yaml"),
    ("extender", "--snapshot", ["--snapshot", "{bad_yaml}"], "bad.yaml"),
    ("extender", "--kubeconfig", ["--kubeconfig", "{missing}"], "--kubeconfig"),
    ("extender", "--bind", ["--bind"], "extender.bind"),
    ("extender", "--bind", ["--bind=yes"], "--bind"),
    ("extender", "--config", ["--config", "{missing}"], "missing.yaml"),
    ("extender", "--config", ["--config", "{bad_yaml}"], "bad.yaml"),
    ("extender", "--host", ["--host", "notahost"], "--host"),
    ("extender", "--host", ["--host", "192.0.2.1"], "--host"),
    ("extender", "--port", ["--port", "http"], "--port"),
    ("extender", "--port", ["--port", "70000"], "--port"),
    ("extender", "--strategy", ["--strategy", "fastest"], "--strategy"),
    ("extender", "--metrics-port", ["--metrics-port", "70000"], "--metrics-port"),
    ("extender", "--metrics-port", ["--metrics-port", "metrics"], "--metrics-port"),
    ("extender", "--metrics-port", ["--port", "8889", "--metrics-port", "8889"], "--metrics-port"),
    ("extender", "--metrics-host", ["--metrics-host", "0.0.0.0"], "--metrics-host"),
    ("extender", "--tls-cert", ["--tls-cert", "{missing}", "--tls-key", "{pod}"], "--tls-cert"),
    ("extender", "--tls-cert", ["--tls-cert", "{pod}", "--tls-key", "{pod}"], "--tls-cert"),
    ("extender", "--tls-key", ["--tls-key", "{pod}"], "--tls-key"),
    ("extender", "--tls-client-ca", ["--tls-client-ca", "{pod}"], "--tls-client-ca"),
    (
        "extender",
        "--metrics-host",
        ["--metrics-port", "0", "--metrics-host", "notahost"],
        "--metrics-host",
    ),
    ("extender", "--prometheus-url", ["--prometheus-url", "ftp://x"], "--prometheus-url"),
    ("extender", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("extender", "--log-format", ["--log-format", "xml"], "--log-format"),
    ("extender-live", "--port", ["--port", "-1"], "--port"),
    ("extender-live", "--context", ["--context", "nowhere"], "--kubeconfig"),
    ("extender-live", "--kube-api-qps", ["--kube-api-qps", "0"], "--kube-api-qps"),
    ("extender-live", "--kube-api-qps", ["--kube-api-qps", "fast"], "--kube-api-qps"),
    ("extender-live", "--kube-api-burst", ["--kube-api-burst", "0"], "--kube-api-burst"),
    ("extender-live", "--kube-api-burst", ["--kube-api-burst", "1.5"], "--kube-api-burst"),
    # autoscaler
    ("autoscaler", "--config", ["--config", "{missing}"], "missing.yaml"),
    ("autoscaler", "--config", ["--config", "{bad_yaml}"], "bad.yaml"),
    ("autoscaler", "--snapshot", ["--snapshot", "{missing}"], "missing.yaml"),
    ("autoscaler", "--kubeconfig", ["--kubeconfig", "{missing}"], "--kubeconfig"),
    ("autoscaler-live", "--context", ["--context", "nowhere"], "--kubeconfig"),
    ("autoscaler", "--once", ["--once=1"], "--once"),
    ("autoscaler", "--dry-run", ["--dry-run=1"], "--dry-run"),
    ("autoscaler", "--prometheus-url", ["--prometheus-url", "ftp://x"], "--prometheus-url"),
    ("autoscaler-live", "--host", ["--host", "notahost"], "--host"),
    ("autoscaler-live", "--kube-api-qps", ["--kube-api-qps", "-1"], "--kube-api-qps"),
    ("autoscaler-live", "--kube-api-burst", ["--kube-api-burst", "none"], "--kube-api-burst"),
    ("autoscaler", "--port", ["--port", "70000"], "--port"),
    ("autoscaler", "--port", ["--port", "eighty"], "--port"),
    ("autoscaler", "--namespace", ["--namespace"], "--namespace"),
    ("autoscaler", "--identity", ["--identity"], "--identity"),
    ("autoscaler", "--lease-duration", ["--lease-duration", "0"], "--lease-duration"),
    ("autoscaler", "--lease-duration", ["--lease-duration", "long"], "--lease-duration"),
    ("autoscaler", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("autoscaler", "--log-format", ["--log-format", "xml"], "--log-format"),
    # explain
    ("explain", "POD", ["{missing}"], "missing.yaml"),
    ("explain", "POD", ["{snap}"], "cluster.json"),
    ("explain-live", "POD", ["default/nobody"], "default/nobody"),
    ("explain-live", "POD", ["a/b/c"], "NAMESPACE/NAME"),
    ("explain", "--snapshot", ["--snapshot", "{missing}"], "missing.yaml"),
    ("explain", "--kubeconfig", ["--kubeconfig", "{kubeconfig}"], "give one source"),
    ("explain-live", "--kubeconfig", ["--kubeconfig", "{missing}"], "--kubeconfig"),
    ("explain-live", "--context", ["--context", "nowhere"], "--kubeconfig"),
    ("explain-live", "--kube-api-qps", ["--kube-api-qps", "-1"], "--kube-api-qps"),
    ("explain-live", "--kube-api-burst", ["--kube-api-burst", "none"], "--kube-api-burst"),
    ("explain", "--config", ["--config", "{bad_yaml}"], "bad.yaml"),
    ("explain", "--strategy", ["--strategy", "fastest"], "--strategy"),
    ("explain", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("explain", "--log-format", ["--log-format", "xml"], "--log-format"),
    # exporter
    ("exporter", "--sysfs-root", ["--sysfs-root", "{missing}"], "--sysfs-root"),
    ("exporter", "--sysfs-root", ["--sysfs-root", "{file}"], "--sysfs-root"),
    ("exporter", "--host", ["--host", "notahost"], "--host"),
    ("exporter", "--port", ["--port", "70000"], "--port"),
    ("exporter", "--port", ["--port", "x"], "--port"),
    ("exporter", "--node-name", ["--node-name", " "], "--node-name"),
    ("exporter", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("exporter", "--log-format", ["--log-format", "xml"], "--log-format"),
    # metrics-api
    ("metrics-api", "--config", ["--config", "{missing}"], "missing.yaml"),
    ("metrics-api", "--kubeconfig", ["--kubeconfig", "{missing}"], "--kubeconfig"),
    ("metrics-api", "--context", ["--context", "nowhere"], "--kubeconfig"),
    ("metrics-api", "--kube-api-qps", ["--kube-api-qps", "0"], "--kube-api-qps"),
    ("metrics-api", "--kube-api-qps", ["--kube-api-qps", "inf"], "--kube-api-qps"),
    ("metrics-api", "--kube-api-burst", ["--kube-api-burst", "0"], "--kube-api-burst"),
    ("metrics-api", "--prometheus-url", ["--prometheus-url", "ftp://x"], "--prometheus-url"),
    ("metrics-api", "--host", ["--host", "notahost"], "--host"),
    ("metrics-api", "--port", ["--port", "70000"], "--port"),
    ("metrics-api", "--tls-cert", ["--tls-cert", "{missing}", "--tls-key", "{pod}"], "--tls-cert"),
    ("metrics-api", "--tls-cert", ["--tls-cert", "{pod}", "--tls-key", "{pod}"], "--tls-cert"),
    ("metrics-api", "--tls-key", ["--tls-key", "{pod}"], "--tls-key"),
    ("metrics-api", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("metrics-api", "--log-format", ["--log-format", "xml"], "--log-format"),
    # simulate
    ("simulate", "scenario", ["{missing}"], "missing.yaml"),
    ("simulate", "scenario", ["{pod}"], "pod.json"),
    ("simulate", "--out", ["--out", "{file}"], "--out"),
    ("simulate", "--out", ["--out", "{under_file}"], "--out"),
    ("simulate", "--policies", ["--policies", "fifo"], "--policies"),
    ("simulate", "--policies", ["--policies", ","], "--policies"),
    ("simulate", "--workers", ["--workers", "0"], "--workers"),
    ("simulate", "--workers", ["--workers", "many"], "--workers"),
    ("simulate", "--dask", ["--dask", "tcp://nohost"], "--dask"),
    (
        "simulate",
        "--dask-timeout",
        ["--dask", "tcp://127.0.0.1:1", "--dask-timeout", "0"],
        "--dask-timeout",
    ),
    ("simulate", "--dask-timeout", ["--dask-timeout", "nan"], "--dask-timeout"),
    ("simulate", "--dask-timeout", ["--dask-timeout", "1"], "--dask-timeout"),
    ("simulate", "--dask-timeout", ["--dask-timeout", "soon"], "--dask-timeout"),
    ("simulate", "--via-http", ["--via-http", "ftp://x"], "--via-http"),
    ("simulate", "--log-level", ["--log-level", "LOUD"], "--log-level"),
    ("simulate", "--log-format", ["--log-format", "xml"], "--log-format"),
]


def _values(
    case: tuple[str, str, list[str], str] | ParameterSet,
) -> tuple[str, str, list[str], str]:
    if isinstance(case, ParameterSet):
        base, flag, bad, mentions = case.values
        return str(base), str(flag), list(bad), str(mentions)  # type: ignore[call-overload]
    return case


def _expand(args: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in args]


def _argv(base: str, bad: list[str], files: dict[str, str]) -> list[str]:
    command = base.removesuffix("-live")
    # The bad arguments come last so they override the base's value of the same flag;
    # positionals replace the base's positional instead.
    base_args = BASE[base]
    if bad and not bad[0].startswith("-"):
        base_args = base_args[1:]
        return [command, *_expand(bad, files), *_expand(base_args, files)]
    return [command, *_expand(base_args, files), *_expand(bad, files)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("base", "flag", "bad", "mentions"),
    CASES,
    ids=[f"{b}-{' '.join(a)}" for b, _, a, _ in map(_values, CASES)],
)
def test_bad_value_is_one_line_and_exit_code_2(
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    base: str,
    flag: str,
    bad: list[str],
    mentions: str,
) -> None:
    argv = _argv(base, bad, files)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (argv, out, err)
    assert out == ""
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith(f"epcsched {argv[0]}: error: "), err
    assert mentions.format(**files) in lines[0], err
    assert "Traceback" not in err


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("epcsched has no subcommands")


def test_every_flag_of_every_subcommand_has_a_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    commands = _subcommands()
    assert {"extender", "autoscaler", "explain", "exporter", "simulate"} <= set(commands)
    covered = {(b.removesuffix("-live"), flag) for b, flag, _, _ in map(_values, CASES)}
    missing = []
    for name, sub in commands.items():
        assert name in listed
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = (
                action.option_strings[-1]
                if action.option_strings
                else action.metavar or action.dest
            )
            if (name, flag) not in covered:
                missing.append(f"{name} {flag}")
    assert missing == []


def test_top_level_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, mentions in (
        ([], "COMMAND"),
        (["schedule"], "schedule"),
        (["--version=2"], "--version"),
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and mentions in captured.err


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"epcsched {version('epcsched')}\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "argv",
    [
        ["extender", "--snapshot", "{snap}", "--host", "notahost"],
        ["extender", "--snapshot", "{snap}", "--log-level", "LOUD"],
        ["simulate", "{tiny}", "--out", "{file}"],
        ["simulate", "{tiny}", "--out", "{under_file}"],
    ],
)
def test_in_a_real_process(files: dict[str, str], argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "epcsched", *_expand(argv, files)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
