"""The files of a generation run directory, written so that `kill -9` loses at most the requests in flight.

* `data.jsonl` and `rejected.jsonl` are appended one record at a time, flushed after each record and fsynced every
  few records (`AppendLog`); a line torn by a kill is cut off when the run resumes (`read_log`).
* `alpaca_data.json`, `stats.json` and `generate_config.json` are whole files, written to a temporary file and
  renamed over the old one (`write_json_atomic`), so a reader never sees half of one.

    log = AppendLog(out / "data.jsonl")
    log.append({"instruction": "...", "input": "", "output": "..."})
    log.close()
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.jsonfile import cut_torn_tail, read_log_lines
from apprentice.jsonfile import write_json_atomic  # noqa: F401 - the run writes its JSON files through store

DATA = "data.jsonl"
REJECTED = "rejected.jsonl"
ALPACA_DATA = "alpaca_data.json"
STATS = "stats.json"
CONFIG = "generate_config.json"
REQUESTS_DB = "requests.sqlite"

ALPACA_FIELDS = ("instruction", "input", "output")


class AppendLog:
    """A JSONL file that grows by whole records: each is flushed to the OS at once (a killed process loses none),
    and fsynced at most every `sync_every_s` seconds and at the end. An fsync per few records was a syscall per
    record at thousands of records a second; what a power cut could take since the last sync, the call record
    gives back when the run is resumed."""

    def __init__(self, path: Path, sync_every_s: float = 1.0):
        self.path = path
        self.sync_every_s = sync_every_s
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
        self._unsynced = 0
        self._synced_at = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self._unsynced += 1
        if time.monotonic() - self._synced_at >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0
        self._synced_at = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's JSONL file ([] when absent). A last line without its newline is what a kill left
    half-written: it is cut off the file. Any other bad line means the file was edited: one clear error."""
    if not path.exists():
        return []
    try:
        records, complete, size = read_log_lines(path)
    except UserError as exc:
        raise UserError(f"{exc}; fix or remove the line to resume") from None
    cut_torn_tail(path, complete, size)
    return [record for _, record in records]


def alpaca_records(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The plain Alpaca list (instruction, input, output) of kept records."""
    return [{key: record.get(key, "") for key in ALPACA_FIELDS} for record in records]
