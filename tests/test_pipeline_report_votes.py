"""The report on a run with human votes (control items among them) and the judge's verdicts (control pairs among
them): agreement between annotators, their and the judge's control accuracy, and humans against the judge counted by
hand; `[annotate] controls` and `[judge] controls` from the run config. Run:
python -m pytest tests/test_pipeline_report_votes.py -q"""

from __future__ import annotations

import json
import tomllib

import pytest
from report_support import STUDENT_WINS, TEACHER_WINS, write_run
from rich.console import Console
from test_pipeline_report import read_page, section_text

from apprentice.annotate import store
from apprentice.errors import UserError
from apprentice.evaluate.outputs import load_outputs
from apprentice.pipeline.config import parse_config
from apprentice.pipeline.report import build_report
from apprentice.pipeline.run import STAGES

CONFIG = ('[teacher]\nmodel = "openai:teacher-model@http://127.0.0.1:9/v1"\n\n[train]\nbase = "bundled:gemma-3-270m"\n\n'
          '[judge]\ncontrols = 2\n\n[annotate]\nvotes_per_item = 2\ncontrols = 2\n')


def vote_everything(db_path, name: str, student: dict[str, str], on_controls: str) -> None:
    """`name` votes for the student on every real item; on a control for the real answer ("right") or not."""
    db = store.create_db(db_path)
    try:
        annotator = store.find_annotator(db, store.add_annotator(db, name))
        while (shown := store.next_item(db, annotator, votes_per_item=2)) is not None:
            control, correct, a_on_left = db.execute(
                "SELECT i.control, i.control_correct, s.a_on_left FROM items i JOIN assignments s ON s.item_id = i.id "
                "WHERE i.id = ? AND s.annotator_id = ?", (shown.item_id, annotator)).fetchone()
            if control:
                real_on_left = (correct == "A") == bool(a_on_left)
                side = "left" if real_on_left == (on_controls == "right") else "right"
            else:
                side = "left" if shown.left == student[shown.instruction] else "right"
            store.record_vote(db, annotator, shown.item_id, side, "", votes_per_item=2)
            store.advance(db, annotator, shown.item_id)
    finally:
        db.close()


def test_votes_with_controls_and_the_judge_give_agreement_accuracy_and_hand_counted_humans_vs_judge(tmp_path):
    run = write_run(tmp_path / "run")
    (run / "run.toml").write_text(CONFIG)
    config = parse_config(tomllib.loads(CONFIG), run)
    annotate = next(stage for stage in STAGES if stage.name == "annotate")
    annotate.run(config, run, False, Console(quiet=True))  # what `apprentice run` does with [annotate]
    connection = store.connect(run / "votes.sqlite")
    assert store.control_count(connection) == 2
    connection.close()

    # the judge's file with two control pairs it got half right (ties), as `apprentice judge --controls` writes them
    judged = run / "judge" / "annotations.json"
    annotations = json.loads(judged.read_text())
    first = annotations[0]
    controls = [{**first, "output_1": first["output_1"], "output_2": annotations[1]["output_1"], "preference": 1.5,
                 "control": "other-answer", "control_correct": correct} for correct in (1.0, 2.0)]
    judged.write_text(json.dumps(annotations + controls))

    student = {o.instruction: o.output for o in load_outputs(run / "answers" / "student.json")}
    vote_everything(run / "votes.sqlite", "Ana Smith", student, on_controls="right")
    vote_everything(run / "votes.sqlite", "Bo Jones", student, on_controls="wrong")
    build_report(run)
    page = read_page(run)
    text = section_text(page, "comparison")

    assert "judge on control pairs 50.0% of 2" in text
    assert "Caution: on 2 control pairs, a real answer against a deliberately wrong one, the verdicts picked the " \
           "real answer only 50% of the time" in text
    humans = text.split("Human votes")[1]
    assert "20 blind votes from 2 annotators" in humans and "student wins / ties / losses 20 / 0 / 0" in humans
    # both annotators always agree: alpha is undefined (one label only), every pair of votes agrees
    assert "pairs of votes on the same item that agree 100.0% of 10" in humans
    assert "4 votes on control pairs" in humans
    assert humans.count("below 80%") == 1 and "100.0% of 2" in humans and "0.0% of 2 below 80%" in humans
    assert "Smith" not in page and "Jones" not in page  # pseudonyms only: the page may be mailed

    # humans against the judge, by hand: every human vote says student (A); the judge said A on 3 prompts, B on 4
    # and tie on 3, so each of the 20 votes meets one verdict
    a, b, ties = len(STUDENT_WINS), len(TEACHER_WINS), 10 - len(STUDENT_WINS) - len(TEACHER_WINS)
    assert "pairs of a human vote and the judge's verdict on the same instruction 20 on 10 instructions" in humans
    assert f"agreement, ties counted {100 * a / 10:.1f}%" in humans
    assert f"agreement where both picked a winner {100 * a / (a + b):.1f}% of {2 * (a + b)}" in humans
    assert "Cohen's kappa (student, teacher, tie) 0.000" in humans.replace("-0.000", "0.000")  # p_o = p_e = 0.3
    assert f"student better {2 * a} {2 * b} {2 * ties} teacher better 0 0 0 tie 0 0 0" in humans

    examples = section_text(page, "examples")
    assert "the judge was right on 50.0% of 2 control pairs" in examples
    assert "10 instructions" in examples  # the control pairs are not among the examples


@pytest.mark.parametrize(("section", "before"), [("judge", "[judge]"), ("annotate", "votes_per_item = 2")])
def test_negative_controls_in_the_config_are_refused(tmp_path, section, before):
    text = CONFIG.replace(f"{before}\ncontrols = 2", f"{before}\ncontrols = -1")
    with pytest.raises(UserError, match=rf"\[{section}\] controls must be 0 or more, got -1"):
        parse_config(tomllib.loads(text), tmp_path)
