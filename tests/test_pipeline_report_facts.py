"""The report's pure parts: the root-verb heuristic, the plain-language reading of a win rate's interval, the choice
of side-by-side examples, verdict words, length summaries, the training summary and text clipping.
Run: python -m pytest tests/test_pipeline_report_facts.py -q"""

from __future__ import annotations

import pytest

from apprentice.errors import UserError
from apprentice.pipeline import report_facts as facts
from apprentice.pipeline.report_facts import (
    clip, describe_lengths, pick_examples, reading, root_verb, sample, training_summary, verb_counts, verdict,
)


@pytest.mark.parametrize("instruction, verb", [
    ("Write a poem about the sea.", "write"),
    ("  explain photosynthesis", "explain"),
    ("Given a list of numbers, sort them.", "sort"),
    ("Using the passage below, summarize the main argument.", "summarize"),
    ("Based on the table, identify the largest city.", "identify"),
    ("Please rewrite the sentence in the passive voice.", "rewrite"),
    ("Can you please translate this into German?", "translate"),
    ("Could you list five fruits?", "list"),
    ("Given the input, please classify it.", "classify"),
    ("Categorise these animals.", "categorise"),
    ("Prioritize the tasks below.", "prioritize"),
    ("Quantify the risk.", "quantify"),
    ("Name three rivers.", "name"),
    ("What is the capital of France?", None),
    ("How do birds fly?", None),
    ("The following sentence has an error.", None),
    ("In what year did the war end?", None),
    ("Size matters?", None),
    ("", None),
    ("123 apples", None),
], ids=lambda value: repr(value)[:40])
def test_root_verb(instruction, verb):
    assert root_verb(instruction) == verb


def test_verb_counts_rank_by_count_then_name():
    top, with_verb = verb_counts(["List a", "Write b", "List c", "Add d", "Write e", "What f?"], top=2)
    assert top == [("list", 2), ("write", 2)] and with_verb == 5


@pytest.mark.parametrize("n, ci, word, phrase", [
    (1, None, "too few judgments", "no interval"),
    (10, [0.52, 0.71], "better", "is above 50%"),
    (10, [0.20, 0.49], "worse", "is below 50%"),
    (180, [0.43, 0.58], "on par", "rules out a gap of more than 10 points"),
    (100, [0.40, 0.60], "on par", "rules out"),
    (100, [0.39, 0.58], "no detectable difference", "too wide"),
    (10, [0.20, 0.70], "no detectable difference", "contains 50%"),
    (100, [0.50, 0.80], "no detectable difference", "contains 50%"),
    (4, [0.50, 0.50], "no detectable difference", "4 judgments are too few to call the two on par"),
])
def test_reading_follows_the_interval_not_the_point(n, ci, word, phrase):
    got_word, sentence = reading({"n": n, "win_rate": 0.9, "win_rate_ci": ci})
    assert got_word == word and phrase in sentence and "Caution" not in sentence


@pytest.mark.parametrize("lean, words", [(None, None), (0.6, None), (0.97, "shown first 97%"),
                                         (0.05, "shown second 95%")])
def test_reading_warns_when_a_probability_judge_reads_only_the_position(lean, words):
    _, sentence = reading({"n": 40, "win_rate_ci": [0.45, 0.55], "swap_agreement": 0.0, "first_position_prob": lean})
    if words is None:
        assert "follow the order, not the answers" not in sentence
    else:
        assert words in sentence and "follow the order, not the answers" in sentence


@pytest.mark.parametrize("agreement, cautioned", [(None, False), (0.9, False), (0.5, False), (0.25, True)])
def test_reading_warns_when_the_judge_contradicts_itself(agreement, cautioned):
    _, sentence = reading({"n": 40, "win_rate_ci": [0.45, 0.55], "swap_agreement": agreement})
    assert ("Caution" in sentence) is cautioned
    if cautioned:
        assert "for only 25% of the pairs" in sentence


@pytest.mark.parametrize("annotation, css, words", [
    ({"preference": 1}, "win", "student better"),
    ({"preference": 2.0}, "loss", "teacher better"),
    ({"preference": "1.5", "swap_agreement": True}, "tie", "tie"),
    ({"preference": 0}, "tie", "tie"),
    ({"preference": 1.5, "swap_agreement": False}, "tie", "tie (the two orders disagreed)"),
    ({"preference": None}, "failed", "no verdict (the judgment failed)"),
    ({"preference": 1.3, "preference_from": "logprobs"}, "win", "student better (P = 0.70)"),
    ({"preference": 1.6, "preference_from": "logprobs"}, "loss", "teacher better (P = 0.60)"),
    ({"preference": 1.5, "preference_from": "logprobs", "swap_agreement": False}, "tie", "tie"),
])
def test_verdict_words(annotation, css, words):
    assert verdict(annotation, 0) == (css, words)


def test_a_bad_preference_names_the_item():
    with pytest.raises(UserError, match="item 3: preference 7"):
        verdict({"preference": 7}, 3)


@pytest.mark.parametrize("preferences, k, chosen", [
    ([1, 1, 1, 2, 2, 1.5], 3, [0, 3, 5]),  # one of each kind first
    ([1, 1, 1, 2, 2, 1.5], 5, [0, 1, 3, 4, 5]),
    ([2, 2, 2], 2, [0, 1]),
    ([None, 1, 1.5, 2], 8, [0, 1, 2, 3]),
    ([], 8, []),
])
def test_pick_examples_takes_each_kind_in_turn(preferences, k, chosen):
    assert pick_examples([{"preference": p} for p in preferences], k) == chosen


def test_describe_lengths():
    assert describe_lengths(["one two", "", "a b c d"]) == {"n": 3, "mean": 2.0, "median": 2, "max": 4, "empty": 1}
    assert describe_lengths([])["mean"] is None


def test_sample_is_seeded_and_in_file_order():
    records = list(range(100))
    picked = sample(records, 10)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked == sample(records, 10)
    assert sample(records[:4], 10) == [0, 1, 2, 3]


def test_training_summary():
    metrics = [{"step": 1, "loss": 3.0, "tokens": 100, "seconds": 0.5, "epoch": 0.5},
               {"step": 2, "loss": 2.5, "tokens": 300, "seconds": 1.5, "epoch": 1.0}]
    assert training_summary(metrics) == {"steps": 2, "first_loss": 3.0, "last_loss": 2.5, "min_loss": 2.5,
                                         "tokens": 400, "seconds": 2.0, "tokens_per_s": 200.0, "epochs": 1.0}
    assert training_summary([]) == {"steps": 0}


def test_clip():
    assert clip("short", 10) == "short"
    assert clip("x" * 25, 10) == "x" * 10 + "\n… (15 more characters)"


@pytest.mark.parametrize("base, student, teacher, closed", [
    (0.0, 0.5, 1.0, 0.5), (10.0, 10.0, 2.0, 0.0), (10.0, 1.0, 2.0, 0.875), (0.2, 0.1, 0.6, -0.25),
    (96.0, 42.5, 78.0, 1 - 35.5 / 18), (1.0, 1.0, 1.0, None), (0.5, 0.7, 0.5, None), (None, 0.5, 1.0, None),
    (0.0, None, 1.0, None),
])
def test_gap_closed(base, student, teacher, closed):
    assert facts.gap_closed(base, student, teacher) == (pytest.approx(closed) if closed is not None else None)


def test_clone_rows_put_base_student_teacher_side_by_side():
    teacher = {"stop_rate": 1.0, "length_ratio": 1.0, "median_words": 60, "rouge_l": 1.0, "distinct_2": 0.9,
               "markdown": 0.5}
    fidelity = {"models": [{"role": "base", "nll": 3.0, "prompts": 12, "tokens": 900},
                           {"role": "student", "nll": 1.8, "prompts": 12, "tokens": 900}],
                "answers": [{"role": "base", "prompts": 12, "teacher": teacher,
                             "measures": {"stop_rate": 0.0, "length_ratio": 3.0, "median_words": 180,
                                          "rouge_l": 0.1, "distinct_2": 0.3, "markdown": 0.0}},
                            {"role": "student", "prompts": 12, "teacher": teacher,
                             "measures": {"stop_rate": 0.75, "length_ratio": 1.5, "median_words": 90,
                                          "rouge_l": 0.4, "distinct_2": 0.8, "markdown": 0.25}}]}
    clone = facts.clone_rows(fidelity)
    assert clone["nll_drop"] == pytest.approx(0.4) and clone["prompts"] == {"base": 12, "student": 12}
    closed = {row["key"]: row["closed"] for row in clone["rows"]}
    assert closed == pytest.approx({"stop_rate": 0.75, "length_ratio": 0.75, "median_words": 0.75,
                                    "rouge_l": 1 / 3, "distinct_2": 5 / 6, "markdown": 0.5})
