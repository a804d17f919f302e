"""A response cache and call record in SQLite, wrapping any Model.

Every call is recorded (backend, request, raw response, usage, seconds); an identical request to the same backend is
answered from the record instead of paying again, so resumed and repeated runs cost nothing. Schema changes are small
named migrations applied once, in order.
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


MIGRATIONS: list[Migration] = [
    ("001_create_calls", _create_calls),
]


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    use_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    apply_migrations(db, MIGRATIONS, applied_column="applied", now=time.time)
    return db


def usage(path: Path, backend: str) -> tuple[int, int, int]:
    """(calls, prompt tokens, completion tokens) the record at `path` holds for `backend`: what it was paid, each
    call once; zeros when there is no record yet."""
    if not path.is_file():
        return 0, 0, 0
    db = open_db(path)
    try:
        return db.execute("SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
                          "FROM calls WHERE backend = ?", (backend,)).fetchone()
    finally:
        db.close()


def is_recorded(db: sqlite3.Connection, backend: str, request: Request) -> bool:
    """Whether the record answers `request` for `backend` (so sending it costs nothing)."""
    return db.execute("SELECT 1 FROM calls WHERE backend = ? AND key = ?",
                      (backend, request.key())).fetchone() is not None


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
        row = self.db.execute(
            "SELECT completion FROM calls WHERE backend = ? AND key = ?", (self.backend, request.key())
        ).fetchone()
        if row is None:
            return None
        return Completion(**{**json.loads(row[0]), "cached": True})

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
                self._record(requests[index], completion, seconds)
                self.paid_calls += 1
            yield index, completion

    def _record(self, request: Request, completion: Completion, seconds: float) -> None:
        payload = completion.to_record()
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO calls (backend, key, request, completion, prompt_tokens, completion_tokens,"
                " seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.backend, request.key(), json.dumps(request.to_json(), ensure_ascii=False),
                 json.dumps(payload, ensure_ascii=False), completion.prompt_tokens, completion.completion_tokens,
                 seconds, time.time()),
            )

    def close(self) -> None:
        self.db.close()
        self.inner.close()
