"""A response cache and call record in SQLite, wrapping any Model.

Every call is recorded (backend, request, raw response, usage, seconds, whether the Batch API answered it); an
identical request to the same backend is answered from the record instead of paying again, so resumed and repeated
runs cost nothing. The Batch API backend (models/batch.py) keeps its submitted batches here too, so the batches and
the answers they bought are in one file. Schema changes are small named migrations applied once, in order.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from apprentice.models.base import FAILED, Completion, Model, Request
from apprentice.sqlitedb import Migration, apply_migrations, use_wal


def _create_calls(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            backend TEXT NOT NULL,
            key TEXT NOT NULL,
            request TEXT NOT NULL,
            completion TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL,
            created REAL NOT NULL,
            UNIQUE (backend, key)
        )"""
    )


def _create_batches(db: sqlite3.Connection) -> None:
    # 1: paid at the Batch API's price, which cost accounting discounts
    db.execute("ALTER TABLE calls ADD COLUMN batch INTEGER NOT NULL DEFAULT 0")
    db.execute(
        """CREATE TABLE batches (
            input_file_id TEXT PRIMARY KEY,  -- the uploaded JSONL: known before the batch exists
            backend TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            batch_id TEXT,  -- NULL until the create call has returned (a restart looks the batch up by its file)
            status TEXT NOT NULL,  -- as last seen: "uploaded", then the API's own
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            collected REAL,  -- when its answers were recorded in calls: never polled again
            created REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE batch_lines (
            input_file_id TEXT NOT NULL REFERENCES batches (input_file_id),
            key TEXT NOT NULL,  -- the request's key, sent as the line's custom_id
            request TEXT NOT NULL,
            PRIMARY KEY (input_file_id, key)
        )"""
    )
    db.execute("CREATE INDEX batch_lines_key ON batch_lines (key)")


MIGRATIONS: list[Migration] = [
    ("001_create_calls", _create_calls),
    ("002_create_batches", _create_batches),
]


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    use_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    apply_migrations(db, MIGRATIONS, applied_column="applied", now=time.time)
    return db


def usage(path: Path, backend: str, batch: bool | None = None) -> tuple[int, int, int]:
    """(calls, prompt tokens, completion tokens) the record at `path` holds for `backend`: what it was paid, each
    call once; zeros when there is no record yet. `batch`: only the calls the Batch API answered (True) or only the
    others (False)."""
    if not path.is_file():
        return 0, 0, 0
    db = open_db(path)
    only = "" if batch is None else f" AND batch = {int(batch)}"
    try:
        return db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
                          f"FROM calls WHERE backend = ?{only}", (backend,)).fetchone()
    finally:
        db.close()


def is_recorded(db: sqlite3.Connection, backend: str, request: Request) -> bool:
    """Whether the record answers `request` for `backend` (so sending it costs nothing)."""
    return db.execute("SELECT 1 FROM calls WHERE backend = ? AND key = ?",
                      (backend, request.key())).fetchone() is not None


def recorded(db: sqlite3.Connection, backend: str, request: Request) -> Completion | None:
    """The recorded answer to `request` for `backend` (with `cached=True`), or None."""
    row = db.execute("SELECT completion FROM calls WHERE backend = ? AND key = ?",
                     (backend, request.key())).fetchone()
    return None if row is None else Completion(**{**json.loads(row[0]), "cached": True})


def record_call(db: sqlite3.Connection, backend: str, request: Request, completion: Completion, seconds: float,
                batch: bool = False) -> None:
    """Record one paid answer, in the caller's transaction. The first record of a call stands: the Batch API
    backend records a batch's answers when it collects them, before RecordedModel sees them."""
    db.execute(
        "INSERT OR IGNORE INTO calls (backend, key, request, completion, prompt_tokens, completion_tokens, seconds,"
        " created, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (backend, request.key(), json.dumps(request.to_json(), ensure_ascii=False),
         json.dumps(completion.to_record(), ensure_ascii=False), completion.prompt_tokens,
         completion.completion_tokens, seconds, time.time(), int(batch)),
    )


class RecordedModel(Model):
    """`model` with a SQLite cache and record at `db_path`. Cached completions come back with `cached=True`."""

    def __init__(self, model: Model, db_path: Path | str, backend_key: str | None = None):
        self.inner = model
        self.spec = model.spec
        self.backend = backend_key or model.spec
        self.db_path = Path(db_path)
        self.db = open_db(self.db_path)
        self.cache_hits = 0
        self.paid_calls = 0

    @property
    def stats(self) -> dict:
        return {**self.inner.stats, "cache_hits": self.cache_hits, "paid_calls": self.paid_calls}

    def lookup(self, request: Request) -> Completion | None:
        return recorded(self.db, self.backend, request)

    def status_text(self) -> str:
        return self.inner.status_text()

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        missing: list[int] = []
        for index, request in enumerate(requests):
            cached = self.lookup(request)
            if cached is None:
                missing.append(index)
            else:
                self.cache_hits += 1
                yield index, cached
        started = time.monotonic()
        for position, completion in self.inner.stream([requests[i] for i in missing]):
            index = missing[position]
            if completion.finish_reason != FAILED:  # a failed request is not an answer: a rerun asks it again
                # the backend's own time when it reports one; else time since the stream began (an upper bound)
                seconds = completion.seconds if completion.seconds is not None else time.monotonic() - started
                with self.db:
                    record_call(self.db, self.backend, requests[index], completion, seconds)
                self.paid_calls += 1
            yield index, completion

    def close(self) -> None:
        self.db.close()
        self.inner.close()
