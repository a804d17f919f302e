"""Fifty annotators voting at once over HTTP on 127.0.0.1, a hundred votes each, with the server killed (SIGKILL) and
restarted half-way: exactly 5,000 votes end up stored, none lost, none doubled, every acknowledged vote as cast.
Latency is measured by bench/annotate_load.py, not here. Run: python -m pytest tests/test_annotate_load.py -q"""

from __future__ import annotations

from collections import Counter

from annotate_support import AnnotateServer, run_load, write_outputs
from apprentice.annotate import store

ANNOTATORS = 50
VOTES_EACH = 100


def test_fifty_annotators_and_a_crash_lose_and_double_nothing(tmp_path):
    a, b = write_outputs(tmp_path / "outputs", VOTES_EACH)
    db = tmp_path / "votes.sqlite"
    with AnnotateServer(a, b, db, votes_per_item=ANNOTATORS) as server:
        connection = store.connect(db)
        links = {f"annotator{k:02d}": f"{server.url}/a/{store.add_annotator(connection, f'annotator{k:02d}')}"
                 for k in range(ANNOTATORS)}
        result = run_load(server, links, restart_after=ANNOTATORS * VOTES_EACH // 2)
        assert "resuming with 100 items" in server.output  # it really restarted
    assert result.retries > 0  # and annotators really met the dead server

    rows = connection.execute("""
        SELECT a.name, v.item_id, v.choice, v.final, s.a_on_left FROM votes v
        JOIN annotators a ON a.id = v.annotator_id
        JOIN assignments s ON s.annotator_id = v.annotator_id AND s.item_id = v.item_id""").fetchall()
    connection.close()
    assert len(rows) == ANNOTATORS * VOTES_EACH
    assert set(Counter(r["name"] for r in rows).values()) == {VOTES_EACH}
    assert set(Counter(r["item_id"] for r in rows).values()) == {ANNOTATORS}
    assert all(r["final"] for r in rows)

    stored = {(r["name"], r["item_id"]): (r["choice"], r["a_on_left"]) for r in rows}
    acknowledged = {(name, item) for name, item, _ in result.acknowledged}
    assert len(acknowledged) == len(result.acknowledged)
    assert len(acknowledged) >= ANNOTATORS * VOTES_EACH - ANNOTATORS  # at most one unanswered vote each
    for name, item, side in result.acknowledged:
        choice, a_on_left = stored[(name, item)]
        expected = "tie" if side == "tie" else "A" if (side == "left") == bool(a_on_left) else "B"
        assert choice == expected, (name, item, side)
