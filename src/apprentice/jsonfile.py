"""Strict reading of the JSON and JSONL files users give apprentice (seed tasks, prompts, instruction data).

Every problem becomes one `UserError` line that names the file and the place to fix: `FILE:LINE: ...` for JSONL
(lines counted from 1) and `FILE: item N: ...` for a JSON list (items counted from 0, as Python and jq index them).

    from apprentice.jsonfile import get_str, read_records, require_object
    for where, value in read_records(path):
        record = require_object(value, where)
        instruction = get_str(record, "instruction", where)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apprentice.errors import UserError

_MISSING: Any = object()


@dataclass(frozen=True)
class Where:
    """A record's place in its file, for error messages: a JSONL line or a JSON list item."""

    path: Path
    line: int | None = None
    item: int | None = None

    @property
    def place(self) -> str:
        """The place without the file: `line 3` or `item 3`."""
        return f"line {self.line}" if self.line is not None else f"item {self.item}"

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}"
        if self.item is not None:
            return f"{self.path}: item {self.item}"
        return str(self.path)

    def error(self, message: str) -> UserError:
        return UserError(f"{self}: {message}")


def describe(value: object) -> str:
    """A parsed value's JSON type as the person who wrote the file would say it: `null`, `a string`, `an object`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def read_text(path: Path) -> str:
    """The file's text, decoded strictly as UTF-8 (a leading byte-order mark is dropped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    return decode_text(path, data)


def decode_text(path: Path, data: bytes) -> str:
    """`data` (read from `path`) decoded strictly as UTF-8, a leading byte-order mark dropped; an error names the
    line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None


class _NotJson(ValueError):
    """NaN or Infinity: Python's json reads them, but they are not JSON, and strict readers refuse a file holding
    them; refusing them on the way in keeps them out of every file apprentice writes."""


def _no_constant(name: str) -> float:
    raise _NotJson(f"{name} is not a JSON value; write null or a number")


def _loads(text: str) -> object:
    return json.loads(text, parse_constant=_no_constant)


def parse_jsonl(path: Path, text: str) -> list[tuple[Where, object]]:
    """One parsed value per non-blank line, with its line number."""
    records = []
    # Only "\n" ends a line: str.splitlines() would also split at U+2028 and friends, which JSON strings may hold raw.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((Where(path, line=number), _loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        except _NotJson as exc:
            raise UserError(f"{path}:{number}: invalid JSON ({exc})") from None
    return records


def read_log_lines(path: Path) -> tuple[list[tuple[Where, dict[str, Any]]], int, int]:
    """The objects on the complete lines of a JSONL log that a process appends to, one record per line: everything
    up to the last newline, strictly (a bad complete line is an error naming it). Returns (objects, bytes up to the
    last newline, bytes in the file): whatever follows the last newline is a record being written, or torn by a
    kill, and is never read; a writer that resumes cuts it off (`cut_torn_tail`)."""
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    values = parse_jsonl(path, decode_text(path, data[:complete]))
    return [(where, require_object(value, where)) for where, value in values], complete, len(data)


def cut_torn_tail(path: Path, complete: int, size: int) -> None:
    """Cut a log back to its last newline (what `read_log_lines` read), so that the next record starts a line."""
    if complete < size:
        with open(path, "r+b") as handle:
            handle.truncate(complete)


def parse_json_list(path: Path, text: str) -> list[tuple[Where, object]]:
    """The items of a file holding one JSON list, with their indexes."""
    try:
        data = _loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except _NotJson as exc:
        raise UserError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {describe(data)}")
    return [(Where(path, item=index), value) for index, value in enumerate(data)]


def read_records(path: Path) -> list[tuple[Where, object]]:
    """The records of a JSON list or a JSONL file, told apart by content: a file whose first non-blank character is
    `[` is one JSON list, anything else is JSONL."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        return parse_json_list(path, text)
    try:
        return parse_jsonl(path, text)
    except UserError as line_error:
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            raise line_error from None
        raise UserError(
            f"{path}: one JSON value ({describe(whole)}) over several lines; expected a JSON list of objects or "
            "JSONL (one object per line)"
        ) from None


def require_object(value: object, where: Where) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"expected a JSON object, got {describe(value)}")
    return value


def _get(record: dict[str, Any], key: str, where: Where, kind: type, kind_name: str, default: Any) -> Any:
    if key not in record:
        if default is _MISSING:
            raise where.error(f"missing field {key!r}")
        return default
    value = record[key]
    # bool is a subclass of int in Python but not a number in JSON, so check the exact kinds.
    if type(value) is not kind:
        raise where.error(f"field {key!r} must be {kind_name}, got {describe(value)}")
    return value


def get_str(record: dict[str, Any], key: str, where: Where, default: Any = _MISSING, *, non_empty: bool = False) -> str:
    """`record[key]`, which must be a string (non-blank when `non_empty`); `default` when absent, if given."""
    value = _get(record, key, where, str, "a string", default)
    if non_empty and isinstance(value, str) and not value.strip():
        raise where.error(f"field {key!r} is empty")
    return value


def get_bool(record: dict[str, Any], key: str, where: Where, default: Any = _MISSING) -> bool:
    """`record[key]`, which must be true or false; `default` when absent, if given."""
    return _get(record, key, where, bool, "true or false", default)


def get_list(record: dict[str, Any], key: str, where: Where, default: Any = _MISSING) -> list[Any]:
    """`record[key]`, which must be a JSON list; `default` when absent, if given."""
    return _get(record, key, where, list, "a list", default)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: written to a temporary file in the same folder, synced, renamed.
    A killed process leaves the old file or the new one, never half of one."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """`write_text_atomic` of `data` as indented UTF-8 JSON (values JSON cannot hold are written as strings)."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
