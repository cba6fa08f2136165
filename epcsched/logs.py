"""Logging for every epcsched program: the same flags, one setup, text for people, JSON for tools.

Operators read the text form in a terminal and ship the JSON form to a log store (Loki,
Elasticsearch, Cloud Logging), which needs one object a line with the event's own fields kept
apart from the message, as klog's JSON format and structlog give. Programs log with the standard
`logging` module; fields of an event are passed as `extra={...}` and appear as keys in JSON (the
text form shows only the message, so messages are written to stand alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def level_name(text: str) -> str:
    """An argparse `type`: the level's canonical name, or a one-line error listing the levels."""
    name = text.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r} (choose from {', '.join(LEVELS)})"
        )
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--log-level` and `--log-format`, as every program takes them."""
    parser.add_argument(
        "--log-level",
        type=level_name,
        default="INFO",
        metavar="LEVEL",
        help=f"least severe level logged: {', '.join(LEVELS)} (default INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (one readable line an event) or json (one object a line, for log stores)",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `setup` installs, told apart from handlers others added (pytest's)."""


class _StderrHandler(_Handler):
    """Writes to whatever `sys.stderr` is when a record is emitted, as logging's last resort
    does, so a replaced stderr (a test's capture) is never written to after it is closed."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def setup(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` and above to `stream` (stderr) in `fmt`.

    Calling it again replaces only what an earlier call installed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level_name(level))
    # No format here shows them, and looking them up is a fair share of a record's cost on
    # the extender's per-pod decision line (the documented switches of the logging module).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Python warnings would otherwise print free text between JSON lines.
    logging.captureWarnings(True)


def setup_from(args: argparse.Namespace) -> None:
    """`setup` from the flags `add_arguments` defined, when the command has them."""
    level = getattr(args, "log_level", None)
    if level is not None:
        setup(level, getattr(args, "log_format", "text") or "text")


def log_start(program: str, logger: str) -> None:
    """The first line a long-running program logs: which build is starting."""
    from epcsched.build import VERSION

    logging.getLogger(logger).info(
        "epcsched %s %s starting", VERSION, program, extra={"version": VERSION}
    )
