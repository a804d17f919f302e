"""What every SQLite file of apprentice needs, in one place: WAL mode, and small named schema migrations applied once
each, in order (llm's `migrations.py` pattern). Used by the call record (models/record.py) and the votes database
(annotate/store.py).

    db = sqlite3.connect(path, timeout=30)
    use_wal(db)
    apply_migrations(db, [("001_create_calls", create_calls)], applied_column="applied", now=time.time)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def use_wal(db: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch to WAL, so readers never wait for the writer. While another connection creates the same new file,
    SQLite can refuse the switch at once with "database is locked" instead of waiting on its busy timeout
    (measured: 8 threads opening one new call record), so wait here."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def apply_migrations(db: sqlite3.Connection, migrations: Sequence[Migration], applied_column: str,
                     now: Callable[[], object]) -> None:
    """Run the named migrations the database has not seen, in order, each once, recording each in the table
    `migrations (name, <applied_column>)` with `now()`. Several threads or processes may open a new file at once:
    the write lock is taken before looking, so each migration runs exactly once. A failing migration changes
    nothing."""
    previous = db.isolation_level
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, {applied_column} NOT NULL)")
        done = {row[0] for row in db.execute("SELECT name FROM migrations")}
        for name, migrate in migrations:
            if name not in done:
                migrate(db)
                db.execute(f"INSERT INTO migrations (name, {applied_column}) VALUES (?, ?)", (name, now()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.isolation_level = previous
