"""Agreement, control items, humans against the judge and the export, with real votes cast through the running
`apprentice annotate` app over HTTP and read back by the real `apprentice tally` and `annotate export` commands.
Run: python -m pytest tests/test_annotate_agreement.py -q"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fractions import Fraction

import pytest

from annotate_support import AnnotateServer, Annotator, write_outputs
from apprentice.annotate import store
from apprentice.evaluate.tally import tally_file
from test_evaluate_agreement import BALLOTS, hand_alpha_and_kappa


def apprentice(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", *args], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"))


def same_numbers(path) -> dict:
    """What `apprentice tally PATH --json` prints, less the file name (read in this process: the same function)."""
    return {k: v for k, v in tally_file(path).items() if k != "file"}


def tally_json(*args: str) -> dict:
    done = apprentice("tally", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def join(server: AnnotateServer, name: str) -> Annotator:
    db = store.connect(server.db)
    try:
        token = store.add_annotator(db, name)
    finally:
        db.close()
    return Annotator(server.url, f"{server.url}/a/{token}", name=name)


def item_facts(db_path, name: str, item: str) -> tuple[bool, str | None, str | None, str]:
    """(output A shown on the left?, control kind, side of the real answer, instruction) of one annotator's item:
    what the test knows and the page does not say."""
    db = store.connect(db_path)
    try:
        row = db.execute("SELECT s.a_on_left, i.control, i.control_correct, i.instruction FROM assignments s "
                         "JOIN annotators a ON a.id = s.annotator_id JOIN items i ON i.id = s.item_id "
                         "WHERE a.name = ? AND s.item_id = ?", (name, item)).fetchone()
        return bool(row[0]), row[1], row[2], row[3]
    finally:
        db.close()


def vote_through(person: Annotator, db_path, choose) -> list[str]:
    """Vote on every item the app gives `person`: choose(instruction, control kind, real side) says A, B or tie.
    Returns every voting page as shown, for the blindness check."""
    pages = []
    while True:
        item, csrf, page = person.page()
        if item is None:
            return pages
        pages.append(page.text)
        a_on_left, control, correct, instruction = item_facts(db_path, person.name, item)
        wanted = choose(instruction, control, correct)
        side = "tie" if wanted == "tie" else "left" if (wanted == "A") == a_on_left else "right"
        assert person.vote(item, csrf, side).status_code == 303
        assert person.next(item, csrf).status_code == 303


def ballot_of(name: str):
    """`name`'s vote in BALLOTS on the item with this instruction ("Instruction number K: ...")."""
    def choose(instruction: str, *_) -> str:
        number = re.search(r"Instruction number (\d+)", instruction).group(1)
        return BALLOTS[f"i{number}"][name]
    return choose


@pytest.fixture(scope="module")
def three_voted(tmp_path_factory):
    """Three annotators' known votes (BALLOTS) on four items, three votes each, cast through the app."""
    tmp = tmp_path_factory.mktemp("three")
    a, b = write_outputs(tmp / "outputs", 4)
    with AnnotateServer(a, b, tmp / "votes.sqlite", votes_per_item=3) as server:
        for name in ("ana", "bo", "cy"):
            vote_through(join(server, name), server.db, ballot_of(name))
        admin = Annotator(server.url, server.admin_link)
        admin_page = admin.get("/admin").text
    return tmp, a, b, server.db, admin_page


def test_three_annotators_through_the_app_give_the_hand_computed_alpha_and_kappa(three_voted):
    _, _, _, db, admin_page = three_voted
    alpha, kappa = hand_alpha_and_kappa(BALLOTS)
    assert (alpha, kappa) == (Fraction(4, 15), Fraction(1, 5))
    result = same_numbers(db)
    agreement = result["agreement"]
    assert agreement["alpha"] == pytest.approx(float(alpha))
    assert agreement["fleiss"]["kappa"] == pytest.approx(float(kappa))
    assert agreement["pairwise_agreement"] == pytest.approx(0.5)
    assert agreement["by_annotator"]["cy"]["agreement_with_others"] == pytest.approx(1 / 3)
    assert result["controls"] is None and result["n"] == 12
    # the admin page shows the same, per annotator too
    assert re.search(r'id="alpha">0\.267\b', admin_page) and re.search(r'id="fleiss">0\.200\b', admin_page)
    assert "33.3% of 3" in admin_page  # cy agrees with the others' majority on 1 of the 3 items that have one
    table = apprentice("tally", str(db)).stdout
    assert re.search(r"Krippendorff's alpha\s+0\.267", table) and re.search(r"Fleiss' kappa\s+0\.200", table)


def test_an_export_read_back_by_tally_gives_the_same_numbers(three_voted):
    tmp, _, _, db, _ = three_voted
    expected = same_numbers(db)
    for name in ("votes.jsonl", "annotations.json"):
        out = tmp / "export" / name
        done = apprentice("annotate", "export", "--db", str(db), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert same_numbers(out) == expected
    lines = (tmp / "export" / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 12
    vote = json.loads(lines[0])
    assert vote["annotator_id"].startswith("anon-") and vote["shown_first"] in (1, 2) and vote["control"] is None
    assert 0 <= vote["seconds_to_vote"] < 60 and vote["created_at"].endswith("+00:00")

    anonymous = tmp / "export" / "anonymous.jsonl"
    assert apprentice("annotate", "export", "--db", str(db), "--out", str(anonymous), "--anonymous").returncode == 0
    text = anonymous.read_text()
    assert not any(f'"{name}"' in text for name in ("ana", "bo", "cy"))
    shared = same_numbers(anonymous)
    assert shared["agreement"]["alpha"] == expected["agreement"]["alpha"] and shared["win_rate"] == expected["win_rate"]
    assert sorted(shared["agreement"]["by_annotator"].values(), key=json.dumps) == sorted(
        expected["agreement"]["by_annotator"].values(), key=json.dumps)


def test_humans_against_the_judge_with_tally_compare(three_voted):
    tmp, a, b, db, _ = three_voted
    outputs_a = {o["instruction"]: o["output"] for o in json.loads(a.read_text())}
    outputs_b = {o["instruction"]: o["output"] for o in json.loads(b.read_text())}
    instructions = list(outputs_a)

    def judged(k: int, preference: float, swapped: bool = False) -> dict:
        one, two = outputs_a[instructions[k]], outputs_b[instructions[k]]
        if swapped:
            one, two = two, one
        return {"instruction": instructions[k], "output_1": one, "output_2": two, "generator_1": "x",
                "generator_2": "y", "annotator": "judge", "preference": preference}

    # the judge: A on item 0, B on 1, tie on 2, and on 3 (sides the other way round) output_1, which is B's answer
    judge = tmp / "judge.json"
    judge.write_text(json.dumps([judged(0, 1), judged(1, 2), judged(2, 1.5), judged(3, 1, swapped=True)]))
    result = tally_json("--compare", str(db), str(judge))
    # by hand from BALLOTS: i0 AAA vs A; i1 AAB vs B; i2 BB-tie vs tie; i3 tie-BB vs B
    assert result["confusion"] == [[3, 2, 0], [0, 3, 2], [0, 1, 1]]
    assert result["agreement"] == pytest.approx(7 / 12)
    assert (result["decisive"], result["decisive_agreement"]) == (8, 0.75)
    assert result["cohen_kappa"] == pytest.approx(11 / 31)  # (84 - 51) / (144 - 51), margins 5/5/2 and 3/6/3
    table = apprentice("tally", "--compare", str(db), str(judge)).stdout
    assert "agreement, ties counted" in table and "58.33%" in table

    other_a, other_b = write_outputs(tmp / "other", 4, lambda i: f"Other first {i}.", lambda i: f"Other second {i}.")
    other_db = tmp / "other.sqlite"
    with AnnotateServer(other_a, other_b, other_db) as server:
        vote_through(join(server, "dee"), server.db, lambda *_: "A")
    for args, message in ((("--compare", str(other_db), str(judge)), "judged different answers to the same "
                                                                      "instruction"),
                          (("--compare", str(db)), "--compare needs exactly two files, got 1")):
        done = apprentice("tally", *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def normalised(page: str) -> str:
    """A voting page without its texts, ids, tokens and numbers: what is left is the page's make-up."""
    page = re.sub(r'<div class="md">.*?</div>', "", page, flags=re.DOTALL)
    page = re.sub(r'value="[^"]*"|nonce="[^"]*"', "", page)
    return re.sub(r"\d+", "0", page)


def test_controls_are_blind_go_to_everyone_and_never_move_the_win_rate(tmp_path):
    a, b = write_outputs(tmp_path / "outputs", 4)
    db = tmp_path / "votes.sqlite"
    with AnnotateServer(a, b, db, votes_per_item=2, controls=2) as server:
        assert "2 control items" in server.output
        # on real items ana always prefers A and bo always B; on controls ana picks the real answer, bo the wrong one
        ana_pages = vote_through(join(server, "ana"), db, lambda ins, control, correct: correct if control else "A")
        bo_pages = vote_through(join(server, "bo"), db,
                                lambda ins, control, correct: {"A": "B", "B": "A"}[correct] if control else "B")
        admin_page = Annotator(server.url, server.admin_link).get("/admin").text
    assert len(ana_pages) == len(bo_pages) == 6  # every control to everyone, beside the 4 real items
    assert len({normalised(page) for page in ana_pages + bo_pages}) == 1  # a control page looks like any other

    result = same_numbers(db)
    assert (result["n"], result["wins"], result["losses"], result["win_rate"]) == (8, 4, 4, 0.5)
    controls = result["controls"]
    assert controls["by_annotator"] == {"ana": {"n": 2, "accuracy": 1.0, "flagged": False},
                                        "bo": {"n": 2, "accuracy": 0.0, "flagged": True}}
    table = apprentice("tally", str(db)).stdout
    assert "control accuracy" in table and "50.00% of 4 control pairs" in table
    assert re.search(r"\bbo\b.* 0\.00% of 2\W+below 80\.00%", table)
    assert not re.search(r"\bana\b.*below", table)
    assert "2 control items" in admin_page and "8 votes of 8 wanted" in admin_page
    assert re.search(r'<tr class="flagged"><td>bo</td>', admin_page)
    assert "0.0% of 2 · below 80.0%: check this annotator" in admin_page

    # the controls were made with the database: another number on a restart is refused
    done = apprentice("annotate", "--a", str(a), "--b", str(b), "--db", str(db), "--controls", "3", "--port", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "holds 2 control items" in done.stderr


def test_more_controls_than_the_pool_is_one_line_and_imports_nothing(tmp_path):
    a, b = write_outputs(tmp_path / "outputs", 3)
    db = tmp_path / "votes.sqlite"
    done = apprentice("annotate", "--a", str(a), "--b", str(b), "--db", str(db), "--controls", "4", "--port", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "--controls 4 is more than the 3 control pairs" in done.stderr
    connection = store.connect(db)
    assert connection.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
    connection.close()
