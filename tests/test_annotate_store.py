"""The votes store on real SQLite files: migrations, import, item order and reservations, vote changes and finality,
un-swapping sides in the export. Run: python -m pytest tests/test_annotate_store.py -q"""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from apprentice.annotate import store
from apprentice.errors import UserError
from apprentice.evaluate.outputs import Pair
from apprentice.sqlitedb import apply_migrations


def pairs(n: int, tag: str = "") -> list[Pair]:
    return [Pair(f"instruction {i}{tag}", f"A says {i}", f"B says {i}", "gen-a", "gen-b", "set") for i in range(n)]


@pytest.fixture
def db(tmp_path):
    connection = store.create_db(tmp_path / "votes.sqlite")
    yield connection
    connection.close()


def annotator(db, name: str) -> int:
    return store.find_annotator(db, store.add_annotator(db, name))


def test_create_db_applies_each_migration_once_and_sets_wal(tmp_path):
    path = tmp_path / "votes.sqlite"
    store.create_db(path).close()
    db = store.create_db(path)
    names = [r["name"] for r in db.execute("SELECT name FROM migrations")]
    assert names == ["m001_initial", "m002_controls"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS


def test_create_db_refuses_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database at all, just some words\n" * 20)
    with pytest.raises(UserError, match="notes.txt"):
        store.create_db(path)


def test_import_is_idempotent_and_refuses_other_pairs(db):
    assert store.import_pairs(db, pairs(4)) == 4
    assert store.import_pairs(db, pairs(4)) == 0
    with pytest.raises(UserError, match=r"already holds 4 items from other output files"):
        store.import_pairs(db, pairs(4, tag="!"))
    assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 4


def test_item_ids_are_random_not_model_or_order_derived(db):
    store.import_pairs(db, pairs(20))
    ids = [r["id"] for r in db.execute("SELECT id FROM items ORDER BY position")]
    assert len(set(ids)) == 20
    assert ids != sorted(ids)  # 20 random ids sorted by chance: 1 in 20!
    # not the generator's name nor the position (a random hex id is all digits about once in 1,800 draws)
    assert not any("gen" in i or i == str(position) for position, i in enumerate(ids))


def test_tokens_are_stored_only_as_hashes(db):
    token = store.add_annotator(db, "ana")
    admin = store.add_admin(db)
    dump = "\n".join(db.iterdump())
    assert token not in dump and admin not in dump
    assert store.hash_token(token) in dump
    assert store.find_annotator(db, token) is not None
    assert store.find_annotator(db, token + "x") is None
    assert store.is_admin(db, admin) and not store.is_admin(db, token)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_bad_annotator_names(db, name):
    with pytest.raises(UserError, match="name"):
        store.add_annotator(db, name)


def test_duplicate_annotator_name_is_one_clear_error(db):
    store.add_annotator(db, "ana")
    with pytest.raises(UserError, match="'ana' already exists"):
        store.add_annotator(db, "ana")


def test_next_item_is_stable_until_the_annotator_moves_on(db):
    store.import_pairs(db, pairs(3))
    ana = annotator(db, "ana")
    first = store.next_item(db, ana, 1)
    assert store.next_item(db, ana, 1) == first  # a reload shows the same item
    store.record_vote(db, ana, first.item_id, "left", "", 1)
    assert store.next_item(db, ana, 1).choice == "left"
    assert store.advance(db, ana, first.item_id)
    assert not store.advance(db, ana, first.item_id)  # a resent form does not skip the next item
    second = store.next_item(db, ana, 1)
    assert second.item_id != first.item_id


def test_each_annotator_sees_each_item_once_and_items_get_exactly_the_votes_asked(db):
    store.import_pairs(db, pairs(6))
    people = [annotator(db, f"p{k}") for k in range(4)]
    seen: dict[int, list[str]] = {p: [] for p in people}
    active = list(people)
    while active:  # round-robin, like people voting at the same time
        for person in list(active):
            shown = store.next_item(db, person, 2)
            if shown is None:
                active.remove(person)
                continue
            seen[person].append(shown.item_id)
            store.record_vote(db, person, shown.item_id, "tie", "", 2)
            store.advance(db, person, shown.item_id)
    for items in seen.values():
        assert len(items) == len(set(items))
    per_item = Counter(r["item_id"] for r in db.execute("SELECT item_id FROM votes"))
    assert sorted(per_item.values()) == [2] * 6


def test_least_voted_items_come_first(db):
    store.import_pairs(db, pairs(4))
    ana, bob = annotator(db, "ana"), annotator(db, "bob")
    voted = []
    for _ in range(2):
        shown = store.next_item(db, ana, 2)
        store.record_vote(db, ana, shown.item_id, "left", "", 2)
        store.advance(db, ana, shown.item_id)
        voted.append(shown.item_id)
    # bob gets the two items nobody voted on before any of ana's
    bobs = []
    for _ in range(2):
        shown = store.next_item(db, bob, 2)
        bobs.append(shown.item_id)
        store.advance(db, bob, shown.item_id)
    assert not set(bobs) & set(voted)


def test_a_shown_item_is_reserved_until_its_reservation_lapses(db):
    store.import_pairs(db, pairs(1))
    ana, bob = annotator(db, "ana"), annotator(db, "bob")
    t0 = 1_000_000.0
    shown = store.next_item(db, ana, 1, now=t0)
    assert store.next_item(db, bob, 1, now=t0 + 60) is None
    later = store.next_item(db, bob, 1, now=t0 + store.RESERVATION_S + 1)
    assert later.item_id == shown.item_id
    store.record_vote(db, bob, later.item_id, "right", "", 1)
    # ana comes back to her lapsed page: the item is full, so her vote is refused and she moves on
    with pytest.raises(store.VoteRejected, match="already has all the votes"):
        store.record_vote(db, ana, shown.item_id, "left", "", 1)
    assert store.next_item(db, ana, 1) is None
    assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 1


def test_votes_change_until_moving_on_and_never_after(db):
    store.import_pairs(db, pairs(2))
    ana = annotator(db, "ana")
    shown = store.next_item(db, ana, 1)
    store.record_vote(db, ana, shown.item_id, "left", "first", 1)
    store.record_vote(db, ana, shown.item_id, "tie", "second thoughts", 1)
    again = store.next_item(db, ana, 1)
    assert (again.choice, again.comment) == ("tie", "second thoughts")
    store.advance(db, ana, shown.item_id)
    with pytest.raises(store.VoteRejected, match="closed"):
        store.record_vote(db, ana, shown.item_id, "right", "", 1)
    row = db.execute("SELECT choice, final FROM votes").fetchone()
    assert (row["choice"], row["final"]) == ("tie", 1)


def test_nobody_votes_on_an_item_not_shown_to_them(db):
    store.import_pairs(db, pairs(2))
    ana, bob = annotator(db, "ana"), annotator(db, "bob")
    anas = store.next_item(db, ana, 1)
    store.record_vote(db, ana, anas.item_id, "left", "mine", 1)
    with pytest.raises(store.VoteRejected):
        store.record_vote(db, bob, anas.item_id, "right", "", 1)
    assert not store.advance(db, bob, anas.item_id)
    assert store.next_item(db, ana, 1).comment == "mine"


def test_skipping_leaves_the_item_to_others(db):
    store.import_pairs(db, pairs(1))
    ana, bob = annotator(db, "ana"), annotator(db, "bob")
    shown = store.next_item(db, ana, 1)
    store.advance(db, ana, shown.item_id)  # no vote: a skip
    assert store.next_item(db, ana, 1) is None  # never the same item twice
    assert store.next_item(db, bob, 1).item_id == shown.item_id


# (A shown on the left?, side clicked) -> AlpacaEval preference (1 = output_1 = A wins)
UNSWAP = [
    (True, "left", 1.0),
    (True, "right", 2.0),
    (False, "left", 2.0),
    (False, "right", 1.0),
    (True, "tie", 1.5),
    (False, "tie", 1.5),
]


@pytest.mark.parametrize(("a_on_left", "side", "preference"), UNSWAP)
def test_export_undoes_the_side_swap(tmp_path, a_on_left, side, preference):
    path = tmp_path / "votes.sqlite"
    db = store.create_db(path)
    store.import_pairs(db, pairs(1))
    ana = annotator(db, "ana")
    shown = store.next_item(db, ana, 1)
    db.execute("UPDATE assignments SET a_on_left = ?", (int(a_on_left),))
    shown = store.next_item(db, ana, 1)
    assert (shown.left, shown.right) == (("A says 0", "B says 0") if a_on_left else ("B says 0", "A says 0"))
    store.record_vote(db, ana, shown.item_id, side, "", 1)
    assert store.next_item(db, ana, 1).choice == side
    db.close()
    [annotation] = store.load_annotations(path)
    timing = {key: annotation.pop(key) for key in ("annotator_id", "seconds_to_vote", "created_at", "updated_at")}
    assert annotation == {
        "instruction": "instruction 0", "output_1": "A says 0", "generator_1": "gen-a", "output_2": "B says 0",
        "generator_2": "gen-b", "annotator": "ana", "preference": preference, "dataset": "set", "comment": "",
        "shown_first": 1 if a_on_left else 2, "control": None, "control_correct": None,
    }
    assert timing["annotator_id"].startswith("anon-") and "ana" not in timing["annotator_id"]
    assert 0 <= timing["seconds_to_vote"] < 60 and timing["created_at"] == timing["updated_at"]


def test_sides_are_drawn_at_random(db):
    store.import_pairs(db, pairs(60))
    ana = annotator(db, "ana")
    for _ in range(60):
        store.advance(db, ana, store.next_item(db, ana, 1).item_id)
    lefts = db.execute("SELECT SUM(a_on_left) FROM assignments").fetchone()[0]
    assert 10 < lefts < 50  # binomial(60, 0.5) outside this range: about 1 in 10^6


def test_progress_counts_votes_and_what_is_still_open(db):
    store.import_pairs(db, pairs(3))
    ana, bob = annotator(db, "ana"), annotator(db, "bob")
    assert store.progress(db, ana, 1) == store.Progress(0, 3)
    shown = store.next_item(db, ana, 1)
    assert store.progress(db, ana, 1) == store.Progress(0, 3)
    assert store.progress(db, bob, 1) == store.Progress(0, 2)  # one is reserved for ana
    store.record_vote(db, ana, shown.item_id, "left", "", 1)
    assert store.progress(db, ana, 1) == store.Progress(1, 3)
    store.advance(db, ana, shown.item_id)
    assert store.progress(db, ana, 1) == store.Progress(1, 3)


def test_sql_looking_text_is_stored_as_text(db, tmp_path):
    store.import_pairs(db, pairs(1))
    ana = annotator(db, "Robert'); DROP TABLE votes; --")
    shown = store.next_item(db, ana, 1)
    comment = "'; DELETE FROM items; SELECT '1"
    store.record_vote(db, ana, shown.item_id, "left", comment, 1)
    [annotation] = store.annotations(db)
    assert annotation["comment"] == comment
    assert annotation["annotator"] == "Robert'); DROP TABLE votes; --"
    assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such votes database"),
    (b"[]", "not a SQLite database"),
])
def test_load_annotations_bad_files(tmp_path, content, message):
    path = tmp_path / "votes.sqlite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        store.load_annotations(path)


def test_load_annotations_refuses_other_sqlite_databases(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="not one written by `apprentice annotate`"):
        store.load_annotations(path)


def test_a_database_from_before_controls_is_read_as_it_is_and_migrated_when_opened(tmp_path):
    path = tmp_path / "old.sqlite"
    db = store.connect(path)
    apply_migrations(db, store.MIGRATIONS[:1], applied_column="applied_at", now=lambda: "then")
    db.execute("INSERT INTO items (id, position, instruction, output_a, output_b, generator_a, generator_b) "
               "VALUES ('i1', 0, 'q', 'a', 'b', 'ga', 'gb')")
    db.execute("INSERT INTO annotators (name, token_hash, created_at) VALUES ('ana', 'h', 'then')")
    db.execute("INSERT INTO assignments (annotator_id, item_id, seq, a_on_left, shown_at) VALUES (1, 'i1', 1, 0, 0)")
    db.execute("INSERT INTO votes (annotator_id, item_id, choice, created_at, updated_at) "
               "VALUES (1, 'i1', 'B', '1970-01-01T00:00:05.250+00:00', '1970-01-01T00:00:09+00:00')")
    db.close()
    [vote] = store.load_annotations(path)  # what tally and the report do: read, never migrate
    assert (vote["preference"], vote["shown_first"], vote["seconds_to_vote"]) == (2.0, 2, 5.25)
    assert (vote["control"], vote["control_correct"]) == (None, None)
    with sqlite3.connect(path) as raw:
        assert "control" not in {r[1] for r in raw.execute("PRAGMA table_info(items)")}
    db = store.create_db(path)  # what annotate does: migrate, keeping every vote
    assert [r["name"] for r in db.execute("SELECT name FROM migrations")] == ["m001_initial", "m002_controls"]
    assert store.annotations(db) == [vote]
    db.close()
