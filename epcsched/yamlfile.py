"""Reading the YAML (or JSON) files operators hand to epcsched, with errors that name the file.

Config files, cluster snapshots, pod files and scenarios all come in here, so every program
reports an unreadable, malformed or absurdly nested file the same way: one line, no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml


class FileFormatError(ValueError):
    """A file that cannot be read or parsed; the message starts with its path."""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return " ".join(text.split()) if text else "syntax error"


def load_documents(path: str | Path) -> list[Any]:
    """Every non-empty document in the file: one for JSON, one or more for YAML."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"{file}: cannot read: {exc.strerror}") from None
    return parse_documents(raw, file)


def parse_documents(raw: bytes, file: str | Path) -> list[Any]:
    """`load_documents` of bytes read elsewhere (standard input); `file` names them in errors."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{file}: not UTF-8 text") from None
    try:
        if text.lstrip().startswith(("{", "[")):
            # JSON (what kubectl prints) decodes far faster than through the YAML parser.
            try:
                return [msgspec.json.decode(raw)]
            except msgspec.DecodeError as exc:
                raise FileFormatError(f"{file}: not valid JSON: {_first_line(exc)}") from None
        try:
            return [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            raise FileFormatError(f"{file}: not valid YAML: {_first_line(exc)}") from None
    except RecursionError:
        raise FileFormatError(f"{file}: nested too deeply to be a real document") from None


def load_document(path: str | Path) -> Any:
    """The one document in the file (None when it is empty)."""
    documents = load_documents(path)
    if len(documents) > 1:
        raise FileFormatError(f"{path}: expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None
