"""The votes database behind `apprentice annotate`: items to compare, annotators, who saw what on which side, votes.

    from apprentice.annotate import store
    db = store.create_db("votes.sqlite")          # creates or opens, applies pending migrations
    store.import_pairs(db, pairs, controls=10)     # pairs from apprentice.evaluate.outputs.join_outputs
    token = store.add_annotator(db, "ana")
    shown = store.next_item(db, annotator_id, votes_per_item=1)
    store.record_vote(db, annotator_id, shown.item_id, "left", "", votes_per_item=1)
    store.advance(db, annotator_id, shown.item_id)  # the vote is final from here on
    store.load_annotations("votes.sqlite")         # AlpacaEval-style annotations, sides un-swapped

SQLite in WAL mode with synchronous=FULL: a function that writes returns only after its transaction is committed to
disk, so the web app acknowledges nothing that a crash could lose. Every write takes the write lock up front
(BEGIN IMMEDIATE) so that choosing an item and reserving it cannot race with another annotator doing the same.
Called inside a transaction that is already open, a write function works in a savepoint instead, which lets the
server commit many annotators' writes with one fsync (see `server.GroupCommit`).

Blindness lives here too: item ids are random, the left/right side of output A is drawn per annotator and item with
`secrets` and stored, and items are handed out least-voted first, ties broken at random, never in file order.

Control items (`evaluate.controls`: a real answer against a wrong one) are items like the others on the page. Every
annotator gets every control, spread at random through their queue (the next item is a control with probability
controls left / items left for them), outside `votes_per_item`; their votes never enter the win rate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apprentice.errors import UserError
from apprentice.evaluate.controls import make_controls
from apprentice.evaluate.outputs import Pair
from apprentice.sqlitedb import Migration, apply_migrations, use_wal

BUSY_TIMEOUT_MS = 10_000
# An item shown to an annotator is reserved for them this long; after that an abandoned page stops blocking others.
RESERVATION_S = 30 * 60
SIDES = ("left", "right", "tie")
PREFERENCE = {"A": 1.0, "B": 2.0, "tie": 1.5}  # AlpacaEval: output_1 = A, output_2 = B


class VoteRejected(Exception):
    """A vote that may not be recorded: not the annotator's current item, already final, or already fully voted."""


@dataclass(frozen=True)
class Shown:
    """An item as one annotator sees it: sides already arranged, and their vote so far (side or None)."""

    item_id: str
    instruction: str
    left: str
    right: str
    choice: str | None
    comment: str


@dataclass(frozen=True)
class Progress:
    done: int  # items this annotator has voted on
    total: int  # done + the ones still open to them (the current item included)


# ---------------------------------------------------------------------------------------------------------- schema


_SCHEMA_1 = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE items (
        id TEXT PRIMARY KEY,               -- random, so it reveals neither model nor file order
        position INTEGER NOT NULL UNIQUE,  -- order in the source files; for export only, never shown
        instruction TEXT NOT NULL,
        output_a TEXT NOT NULL,
        output_b TEXT NOT NULL,
        generator_a TEXT NOT NULL,
        generator_b TEXT NOT NULL,
        dataset TEXT
    )""",
    """CREATE TABLE annotators (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,   -- SHA-256 of the invite token; the token itself is never stored
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE admins (id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
    """CREATE TABLE assignments (
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        item_id TEXT NOT NULL REFERENCES items(id),
        seq INTEGER NOT NULL,              -- the annotator's n-th item; the highest is the current one
        a_on_left INTEGER NOT NULL CHECK (a_on_left IN (0, 1)),
        shown_at REAL NOT NULL,
        skipped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (annotator_id, item_id),
        UNIQUE (annotator_id, seq)
    )""",
    """CREATE INDEX assignments_item ON assignments(item_id)""",
    """CREATE TABLE votes (
        annotator_id INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),  -- un-swapped: A is the --a file
        comment TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        final INTEGER NOT NULL DEFAULT 0,  -- 1 once the annotator moved on; then it never changes
        PRIMARY KEY (annotator_id, item_id),
        FOREIGN KEY (annotator_id, item_id) REFERENCES assignments(annotator_id, item_id)
    )""",
    """CREATE INDEX votes_item ON votes(item_id)""",
)


def _m001_initial(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's transaction half-way.
    for statement in _SCHEMA_1:
        db.execute(statement)
    db.execute("INSERT INTO meta (key, value) VALUES ('secret', ?)", (secrets.token_hex(32),))


def _m002_controls(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE items ADD COLUMN control TEXT "  # NULL on a real pair, else evaluate.controls.KINDS
               "CHECK (control IN ('other-answer', 'first-sentence'))")
    db.execute("ALTER TABLE items ADD COLUMN control_correct TEXT "  # the side holding the real answer
               "CHECK (control_correct IN ('A', 'B'))")


MIGRATIONS: tuple[Migration, ...] = (("m001_initial", _m001_initial), ("m002_controls", _m002_controls))


def connect(path: str | Path) -> sqlite3.Connection:
    """Open an existing votes database with the settings every connection needs (one connection per thread)."""
    db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    db.row_factory = sqlite3.Row
    use_wal(db)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA synchronous=FULL")
    return db


def create_db(path: str | Path) -> sqlite3.Connection:
    """Create the database (or open it) and apply the migrations it has not seen yet, each once, by name."""
    try:
        db = connect(path)
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot open as a SQLite database ({exc})") from None
    try:
        apply_migrations(db, MIGRATIONS, applied_column="applied_at", now=_now)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UserError(f"{path}: not a votes database ({exc})") from None
    return db


@contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the write lock from the start; commits (to disk) on success.

    Inside a transaction someone else opened (the server's group commit), it is a savepoint instead: its changes are
    undone alone on error and reach the disk with the outer COMMIT."""
    if db.in_transaction:
        db.execute("SAVEPOINT write")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            raise
        db.execute("RELEASE write")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def secret(db: sqlite3.Connection) -> str:
    """A random per-database key, for deriving form (CSRF) tokens that survive a restart."""
    return db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()["value"]


# --------------------------------------------------------------------------------------------------- items, people


def pairs_fingerprint(pairs: Iterable[Pair]) -> str:
    """A hash of the pairs to vote on: votes cast on one set of answers belong to that set only."""
    rows = [[p.instruction, p.output_a, p.output_b, p.generator_a, p.generator_b, p.dataset] for p in pairs]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def stored_fingerprint(path: str | Path) -> str | None:
    """The `pairs_fingerprint` of the pairs a votes database holds; None when it holds none (or does not exist)."""
    if not Path(path).is_file():
        return None
    db = create_db(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'pairs_sha256'").fetchone()
        return row["value"] if row is not None else None
    finally:
        db.close()


def move_aside(path: str | Path, destination: str | Path) -> None:
    """Move a votes database (with its WAL, emptied into it first) to `destination`, which must not exist: votes
    are people's work, never deleted."""
    path, destination = Path(path), Path(destination)
    if destination.exists():
        raise UserError(f"cannot move {path} aside: {destination} exists")
    db = connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{destination}{suffix}")


def _db_file(db: sqlite3.Connection) -> str:
    return db.execute("PRAGMA database_list").fetchone()["file"]


def control_count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM items WHERE control IS NOT NULL").fetchone()[0]


def import_pairs(db: sqlite3.Connection, pairs: list[Pair], controls: int | None = None) -> int:
    """Store the pairs to vote on, with `controls` control items made from them; returns how many pairs were added.

    Importing the same pairs again adds nothing (a restart); different pairs into a database that has items is an
    error, since votes on one comparison must not be mixed with another. Controls are made once, on the first
    import: `controls` None keeps what the database has, another number than it has is an error."""
    fingerprint = pairs_fingerprint(pairs)
    with _write(db):
        row = db.execute("SELECT value FROM meta WHERE key = 'pairs_sha256'").fetchone()
        if row is not None:
            if row["value"] == fingerprint:
                held = control_count(db)
                if controls is not None and controls != held:
                    raise UserError(f"{_db_file(db)} holds {held} control items, made when it was created; asking "
                                    f"for {controls} cannot change that (ask for {held}, or use a new database)")
                return 0
            count = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            raise UserError(
                f"{_db_file(db)} already holds {count} items from other output files; "
                "use a new --db for this comparison (or the same --a/--b files as before)"
            )
        made = make_controls(pairs, controls or 0, random.Random(secrets.randbits(64)))
        db.executemany(
            "INSERT INTO items (id, position, instruction, output_a, output_b, generator_a, generator_b, dataset, "
            "control, control_correct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(secrets.token_hex(8), position, p.instruction, p.output_a, p.output_b, p.generator_a, p.generator_b,
              p.dataset, kind, correct) for position, (p, kind, correct) in
             enumerate([(p, None, None) for p in pairs] + [(c.pair, c.kind, c.correct) for c in made])],
        )
        db.execute("INSERT INTO meta (key, value) VALUES ('pairs_sha256', ?)", (fingerprint,))
    return len(pairs)


def add_annotator(db: sqlite3.Connection, name: str) -> str:
    """Create an annotator and return their secret token (only its hash is kept: print it now or lose it)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise UserError("annotator name must be 1 to 100 characters")
    token = secrets.token_urlsafe(24)
    try:
        with _write(db):
            db.execute("INSERT INTO annotators (name, token_hash, created_at) VALUES (?, ?, ?)",
                       (name, hash_token(token), _now()))
    except sqlite3.IntegrityError:
        raise UserError(f"an annotator named {name!r} already exists in {_db_file(db)}; pick another name") from None
    return token


def add_admin(db: sqlite3.Connection) -> str:
    """Create an admin token (progress, tally, export, invitations) and return it; only its hash is kept."""
    token = secrets.token_urlsafe(24)
    with _write(db):
        db.execute("INSERT INTO admins (token_hash, created_at) VALUES (?, ?)", (hash_token(token), _now()))
    return token


def has_admin(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM admins LIMIT 1").fetchone() is not None


def find_annotator(db: sqlite3.Connection, token: str) -> int | None:
    row = db.execute("SELECT id FROM annotators WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return None if row is None else row["id"]


def is_admin(db: sqlite3.Connection, token: str) -> bool:
    return db.execute("SELECT 1 FROM admins WHERE token_hash = ?", (hash_token(token),)).fetchone() is not None


# ----------------------------------------------------------------------------------------------------------- voting

# Votes an item has or is about to get: every assignment not skipped that was voted on or shown recently.
_TAKEN = """
    SELECT s.item_id, COUNT(*) AS n FROM assignments s
    LEFT JOIN votes v ON v.annotator_id = s.annotator_id AND v.item_id = s.item_id
    WHERE s.skipped = 0 AND (v.item_id IS NOT NULL OR s.shown_at > :stale)
    GROUP BY s.item_id
"""
# Real items an annotator may still be given: never seen by them and still short of the votes asked for.
_OPEN_TO = f"""
    FROM items i LEFT JOIN ({_TAKEN}) t ON t.item_id = i.id
    WHERE i.control IS NULL AND COALESCE(t.n, 0) < :votes_per_item
      AND NOT EXISTS (SELECT 1 FROM assignments m WHERE m.item_id = i.id AND m.annotator_id = :annotator)
"""
# Control items an annotator has not been shown yet: each goes to everyone.
_CONTROLS_LEFT = """
    FROM items i WHERE i.control IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM assignments m WHERE m.item_id = i.id AND m.annotator_id = :annotator)
"""


def _current(db: sqlite3.Connection, annotator_id: int) -> sqlite3.Row | None:
    """The annotator's latest assignment if they have not moved on from it yet."""
    row = db.execute(
        "SELECT s.item_id, s.a_on_left, s.skipped, v.choice, v.comment, v.final, i.control FROM assignments s "
        "JOIN items i ON i.id = s.item_id "
        "LEFT JOIN votes v ON v.annotator_id = s.annotator_id AND v.item_id = s.item_id "
        "WHERE s.annotator_id = ? ORDER BY s.seq DESC LIMIT 1",
        (annotator_id,),
    ).fetchone()
    if row is None or row["skipped"] or row["final"]:
        return None
    return row


def _shown(db: sqlite3.Connection, current: sqlite3.Row) -> Shown:
    item = db.execute("SELECT instruction, output_a, output_b FROM items WHERE id = ?",
                      (current["item_id"],)).fetchone()
    a_on_left = bool(current["a_on_left"])
    left, right = (item["output_a"], item["output_b"]) if a_on_left else (item["output_b"], item["output_a"])
    choice = current["choice"]
    side = None if choice is None else "tie" if choice == "tie" else "left" if (choice == "A") == a_on_left else "right"
    return Shown(current["item_id"], item["instruction"], left, right, side, current["comment"] or "")


def current_item(db: sqlite3.Connection, annotator_id: int) -> Shown | None:
    """The item this annotator was shown and has not moved on from (reads only)."""
    current = _current(db, annotator_id)
    return None if current is None else _shown(db, current)


def next_item(db: sqlite3.Connection, annotator_id: int, votes_per_item: int,
              now: float | None = None) -> Shown | None:
    """The item to show this annotator: their current one if they have not moved on, else a new one reserved for
    them (least-voted first, ties at random, sides drawn at random, controls mixed in at random); None when nothing
    is left for them."""
    shown = current_item(db, annotator_id)
    if shown is not None:
        return shown
    now = time.time() if now is None else now
    with _write(db):
        shown = current_item(db, annotator_id)  # another request of theirs may have won the lock first
        if shown is not None:
            return shown
        params = {"annotator": annotator_id, "votes_per_item": votes_per_item, "stale": now - RESERVATION_S}
        real = db.execute(f"SELECT COUNT(*) {_OPEN_TO}", params).fetchone()[0]
        controls = db.execute(f"SELECT COUNT(*) {_CONTROLS_LEFT}", params).fetchone()[0]
        if secrets.randbelow(real + controls or 1) < controls:
            row = db.execute(f"SELECT i.id {_CONTROLS_LEFT} ORDER BY random() LIMIT 1", params).fetchone()
        else:
            row = db.execute(f"SELECT i.id {_OPEN_TO} ORDER BY COALESCE(t.n, 0), random() LIMIT 1", params).fetchone()
        if row is None:
            return None
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM assignments WHERE annotator_id = ?",
                         (annotator_id,)).fetchone()[0]
        db.execute(
            "INSERT INTO assignments (annotator_id, item_id, seq, a_on_left, shown_at) VALUES (?, ?, ?, ?, ?)",
            (annotator_id, row["id"], seq, secrets.randbelow(2), now),
        )
        return current_item(db, annotator_id)


def record_vote(db: sqlite3.Connection, annotator_id: int, item_id: str, side: str, comment: str,
                votes_per_item: int) -> None:
    """Store (or change) the annotator's vote on their current item; `side` is what they saw: left, right or tie.

    Returns once committed. Raises VoteRejected for any item other than their current one, and when others have
    meanwhile given the item all its votes (their reservation had lapsed); that item is then skipped for them."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    rejection = None
    with _write(db):
        current = _current(db, annotator_id)
        if current is None or current["item_id"] != item_id:
            raise VoteRejected("this item is closed: votes can be changed only until the next item is shown")
        others = db.execute("SELECT COUNT(*) FROM votes WHERE item_id = ? AND annotator_id != ?",
                            (item_id, annotator_id)).fetchone()[0]
        if current["choice"] is None and others >= votes_per_item and current["control"] is None:
            db.execute("UPDATE assignments SET skipped = 1 WHERE annotator_id = ? AND item_id = ?",
                       (annotator_id, item_id))
            rejection = "this item already has all the votes it needs; here is another"
        else:
            a_on_left = bool(current["a_on_left"])
            choice = "tie" if side == "tie" else "A" if (side == "left") == a_on_left else "B"
            stamp = _now()
            db.execute(
                "INSERT INTO votes (annotator_id, item_id, choice, comment, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (annotator_id, item_id) "
                "DO UPDATE SET choice = excluded.choice, comment = excluded.comment, updated_at = excluded.updated_at",
                (annotator_id, item_id, choice, comment, stamp, stamp),
            )
    if rejection:
        raise VoteRejected(rejection)


def advance(db: sqlite3.Connection, annotator_id: int, item_id: str) -> bool:
    """Move the annotator past `item_id`: a vote on it becomes final, no vote makes it a skip.

    Naming the item makes a repeated request (a double click, a resent form) a no-op instead of a skipped item;
    returns whether anything changed."""
    with _write(db):
        current = _current(db, annotator_id)
        if current is None or current["item_id"] != item_id:
            return False
        if current["choice"] is None:
            db.execute("UPDATE assignments SET skipped = 1 WHERE annotator_id = ? AND item_id = ?",
                       (annotator_id, item_id))
        else:
            db.execute("UPDATE votes SET final = 1 WHERE annotator_id = ? AND item_id = ?", (annotator_id, item_id))
    return True


def progress(db: sqlite3.Connection, annotator_id: int, votes_per_item: int, now: float | None = None) -> Progress:
    """How far one annotator is: items voted on, out of those plus the ones still open to them."""
    now = time.time() if now is None else now
    done = db.execute("SELECT COUNT(*) FROM votes WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    params = {"annotator": annotator_id, "votes_per_item": votes_per_item, "stale": now - RESERVATION_S}
    left = sum(db.execute(f"SELECT COUNT(*) {query}", params).fetchone()[0] for query in (_OPEN_TO, _CONTROLS_LEFT))
    current = _current(db, annotator_id)
    pending = 1 if current is not None and current["choice"] is None else 0
    return Progress(done, done + left + pending)


# ------------------------------------------------------------------------------------------------------ admin views


@dataclass(frozen=True)
class AnnotatorRow:
    name: str
    votes: int
    skipped: int
    last_active: str | None


@dataclass(frozen=True)
class Overview:
    items: int  # real pairs; controls apart
    votes: int  # on real pairs
    target: int  # items * votes_per_item
    controls: int  # control items, each shown to every annotator
    annotators: list[AnnotatorRow]
    items_by_votes: list[tuple[int, int]]  # (votes on an item, how many items have that many)


def overview(db: sqlite3.Connection, votes_per_item: int) -> Overview:
    """Progress for the admin page: per annotator, and how many real items have 0, 1, 2... votes."""
    items = db.execute("SELECT COUNT(*) FROM items WHERE control IS NULL").fetchone()[0]
    votes = db.execute("SELECT COUNT(*) FROM votes v JOIN items i ON i.id = v.item_id "
                       "WHERE i.control IS NULL").fetchone()[0]
    annotators = [
        AnnotatorRow(r["name"], r["votes"], r["skipped"], r["last_active"])
        for r in db.execute("""
            SELECT a.name,
                   (SELECT COUNT(*) FROM votes v WHERE v.annotator_id = a.id) AS votes,
                   (SELECT COUNT(*) FROM assignments s WHERE s.annotator_id = a.id AND s.skipped = 1) AS skipped,
                   (SELECT MAX(updated_at) FROM votes v WHERE v.annotator_id = a.id) AS last_active
            FROM annotators a ORDER BY a.name""")
    ]
    by_votes = db.execute("""
        SELECT n, COUNT(*) AS items FROM (
            SELECT (SELECT COUNT(*) FROM votes v WHERE v.item_id = i.id) AS n FROM items i WHERE i.control IS NULL)
        GROUP BY n ORDER BY n""").fetchall()
    return Overview(items, votes, items * votes_per_item, control_count(db), annotators,
                    [(r["n"], r["items"]) for r in by_votes])


def _pseudonym(key: bytes, annotator_id: int) -> str:
    """A stable id for an annotator that does not reveal their name: keyed with the database's secret, so that
    nobody without the database can tell who it is."""
    return "anon-" + hmac.new(key, f"annotator:{annotator_id}".encode(), "sha256").hexdigest()[:8]


def _seconds(shown_at: float, voted_at: str) -> float:
    return round(datetime.fromisoformat(voted_at).timestamp() - shown_at, 3)


def annotations(db: sqlite3.Connection) -> list[dict]:
    """Every vote as an AlpacaEval annotation (output_1 = A, output_2 = B), in source order (controls last), then
    annotator; with, beyond AlpacaEval's fields, the annotator's pseudonym, which output was on the left
    (`shown_first`), the seconds from showing the item to the first vote on it, the vote's time stamps and, for a
    control, its kind and the preference a right vote gives (`evaluate.controls`)."""
    # a database from before controls, read without migrating it (tally and the report only read)
    columns = {r["name"] for r in db.execute("PRAGMA table_info(items)")}
    control = "i.control, i.control_correct" if "control" in columns else "NULL AS control, NULL AS control_correct"
    rows = db.execute(f"""
        SELECT i.instruction, i.output_a, i.generator_a, i.output_b, i.generator_b, i.dataset, {control},
               a.id AS annotator_id, a.name, v.choice, v.comment, v.created_at, v.updated_at, s.a_on_left, s.shown_at
        FROM votes v JOIN items i ON i.id = v.item_id JOIN annotators a ON a.id = v.annotator_id
        JOIN assignments s ON s.annotator_id = v.annotator_id AND s.item_id = v.item_id
        ORDER BY i.position, a.name""")
    key = secret(db).encode()
    return [
        {"instruction": r["instruction"], "output_1": r["output_a"], "generator_1": r["generator_a"],
         "output_2": r["output_b"], "generator_2": r["generator_b"], "annotator": r["name"],
         "preference": PREFERENCE[r["choice"]], "dataset": r["dataset"], "comment": r["comment"],
         "annotator_id": _pseudonym(key, r["annotator_id"]),
         "shown_first": 1 if r["a_on_left"] else 2, "seconds_to_vote": _seconds(r["shown_at"], r["created_at"]),
         "created_at": r["created_at"], "updated_at": r["updated_at"], "control": r["control"],
         "control_correct": None if r["control"] is None else PREFERENCE[r["control_correct"]]}
        for r in rows
    ]


def load_annotations(db_path: str | Path) -> list[dict]:
    """The votes in a votes database as AlpacaEval-style annotations (what `apprentice tally votes.sqlite` reads)."""
    path = Path(db_path)
    if not path.is_file():
        raise UserError(f"{path}: no such votes database")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            raise UserError(f"{path}: not a SQLite database") from None
        if not {"votes", "items", "annotators"} <= tables:
            raise UserError(f"{path}: a SQLite database, but not one written by `apprentice annotate`")
        return annotations(db)
    finally:
        db.close()
