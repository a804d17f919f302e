"""The LLM judge on control pairs, against a real scripted HTTP judge: one that always names the first-shown answer
scores 50% on controls (sides balanced, both orders), one that reads the answers scores 100%, the controls never
enter the win rate, tally prints the accuracy beside it, and asking for more controls than the data can give is one
line and exit code 2. Run: python -m pytest tests/test_evaluate_judge_controls.py -q"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

from servers import ScriptedServer, chat_reply

from apprentice.evaluate.controls import control_summary, make_controls
from apprentice.evaluate.judge import judge_pairs
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.stats import summarize
from apprentice.models import load_model
from apprentice.models.record import RecordedModel

TOPICS = [f"topic-{k}" for k in range(8)]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="200"))


def write_outputs(path, generator: str, word: str) -> None:
    """Answers of two sentences, so that both kinds of control can be made."""
    path.write_text(json.dumps([{"instruction": f"Explain {topic}.", "generator": generator,
                                 "output": f"{word} on {topic}. It goes on about {topic} at some length, twice over."}
                                for topic in TOPICS]))


def always_first(path, body):
    return chat_reply("A")


def reads_the_answers(path, body):
    """A judge that picks the answer about the instruction's topic, the longer one when both are."""
    prompt = body["messages"][0]["content"]
    topic = re.search(r"Explain (topic-\d)\.", prompt).group(1)
    first = prompt.split("### Response A\n", 1)[1].split("\n\n### Response B\n", 1)[0]
    second = prompt.split("### Response B\n", 1)[1].split("\n\n### ", 1)[0]
    score = [(topic in text, len(text)) for text in (first, second)]
    return chat_reply("tie" if score[0] == score[1] else "A" if score[0] > score[1] else "B")


def test_a_judge_that_always_says_a_scores_half_on_controls_and_tally_shows_it(tmp_path):
    a, b, out = tmp_path / "student.json", tmp_path / "teacher.json", tmp_path / "judge.json"
    write_outputs(a, "student", "Student")
    write_outputs(b, "teacher", "Teacher")
    with ScriptedServer(always_first) as server:
        done = run_cli("judge", "--a", str(a), "--b", str(b), "--judge", f"openai:j@{server.url}", "--out", str(out),
                       "--controls", "6")
        assert done.returncode == 0, done.stderr
        assert server.count("/chat/completions") == 2 * (8 + 6)
    assert "picked the real answer 50.0% of the time" in " ".join(done.stdout.split())
    annotations = json.loads(out.read_text())
    controls = annotations[8:]
    assert [a.get("control") for a in annotations[:8]] == [None] * 8
    assert sorted(c["control_correct"] for c in controls) == [1.0] * 3 + [2.0] * 3  # sides balanced
    assert {c["control"] for c in controls} <= {"other-answer", "first-sentence"}
    assert [c["preference"] for c in controls] == [1.5] * 6  # both orders disagree: ties, half right each

    tally = run_cli("tally", str(out), "--json")
    [summary] = json.loads(tally.stdout)
    assert summary["controls"]["accuracy"] == 0.5 and summary["controls"]["n"] == 6
    assert summary["n"] == 8 and summary == {**summary, **summarize(annotations[:8])}
    table = " ".join(run_cli("tally", str(out)).stdout.split())
    assert "win rate, ties half 50.00% 95% CI, bootstrap 50.0% to 50.0% control accuracy 50.00% of 6 control " \
           "pairs (below 80.00%: these verdicts are doubtful)" in table


def test_a_judge_that_reads_the_answers_scores_full_marks_in_one_order(tmp_path):
    pairs = [Pair(f"Explain {topic}.", f"Student on {topic}. It goes on about {topic} at some length, twice over.",
                  f"Teacher on {topic}. It goes on about {topic} at some length, twice over.", "student", "teacher")
             for topic in TOPICS]
    controls = make_controls(pairs, 8, random.Random(3))
    with ScriptedServer(reads_the_answers) as server:
        model = RecordedModel(load_model(f"openai:j@{server.url}"), tmp_path / "cache.sqlite")
        try:
            annotations = judge_pairs(pairs, model, orders=1, controls=controls)
        finally:
            model.close()
    assert {c.kind for c in controls} == {"other-answer", "first-sentence"}
    summary = control_summary(annotations)
    assert (summary["n"], summary["accuracy"], summary["flagged"]) == (8, 1.0, False)
    assert summarize(annotations)["n"] == 8


def test_more_controls_than_the_pool_is_one_line_and_writes_nothing(tmp_path):
    a, b, out = tmp_path / "student.json", tmp_path / "teacher.json", tmp_path / "judge.json"
    write_outputs(a, "student", "Student")
    write_outputs(b, "teacher", "Teacher")
    done = run_cli("judge", "--a", str(a), "--b", str(b), "--judge", "openai:j@http://127.0.0.1:9", "--out", str(out),
                   "--controls", "9")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "--controls 9 is more than the 8 control pairs these 8 instructions can give" in done.stderr
    assert not out.exists()
