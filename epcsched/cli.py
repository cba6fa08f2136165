"""The `epcsched` command: one entry point, a subcommand per program.

Each subcommand lives in the package it runs and exposes `register(subparsers)`; this module only
collects them and turns expected errors into one clear line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# Modules that provide a `register(subparsers)` function, in the order `--help` lists them.
COMMAND_MODULES = (
    "epcsched.extender.command",
    "epcsched.autoscaler.command",
    "epcsched.explain",
    "epcsched.exporter.command",
    "epcsched.metricsapi.command",
    "epcsched.simulation.command",
)


class CommandError(Exception):
    """An error the user can fix (bad file, bad flag value); printed without a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line (the usage block is `--help`'s job).

    Subcommand parsers are made by `add_parser`, which uses the parent's class, so every
    subcommand inherits this.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from epcsched.build import VERSION

    parser = Parser(
        prog="epcsched",
        description="EPC-aware scheduling and autoscaling for Kubernetes SGX clusters.",
    )
    parser.add_argument("--version", action="version", version=f"epcsched {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    from epcsched import logs
    from epcsched.config import ConfigError
    from epcsched.kube.snapshot import SnapshotError
    from epcsched.objects import ObjectError
    from epcsched.quantity import QuantityError

    try:
        logs.setup_from(args)
        result = args.func(args)
    except (CommandError, ConfigError, SnapshotError, ObjectError, QuantityError) as exc:
        print(f"epcsched {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
