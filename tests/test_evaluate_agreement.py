"""Agreement measures and control pairs as pure functions: the libraries checked on published worked examples
(Krippendorff 2011, Wikipedia's Fleiss' and Cohen's kappa examples), a three-annotator case computed by hand, the
control pairs' pool, kinds and balanced sides, and humans against a judge on crafted files counted by hand.
Run: python -m pytest tests/test_evaluate_agreement.py -q"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest

from apprentice.errors import UserError
from apprentice.evaluate.agreement import annotator_agreement, compare, fleiss, krippendorff_alpha
from apprentice.evaluate.controls import control_pool, control_summary, first_sentence, make_controls
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.stats import summarize


def test_krippendorff_alpha_matches_the_published_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, values
    # 1-5, missing values; nominal alpha = 0.743. Our function takes each unit's value counts.
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    counts = np.array([[sum(row[u] == value for row in data) for value in range(1, 6)] for u in range(12)], float)
    assert krippendorff_alpha(counts) == pytest.approx(0.743, abs=5e-4)


def test_fleiss_kappa_matches_the_published_example():
    # Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories; kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]], float)
    result = fleiss(table)
    assert result["kappa"] == pytest.approx(0.210, abs=5e-4)
    assert (result["n_items"], result["votes_per_item"]) == (10, 14)


def annotation(instruction: str, who: str, preference, output_1: str = "", output_2: str = "", **extra) -> dict:
    return {"instruction": instruction, "output_1": output_1 or f"one {instruction}",
            "output_2": output_2 or f"two {instruction}", "generator_1": "m1", "generator_2": "m2",
            "annotator": who, "preference": preference, **extra}


PREFERENCE = {"A": 1, "B": 2, "tie": 1.5}
# three annotators, four items, three votes each
BALLOTS = {"i0": {"ana": "A", "bo": "A", "cy": "A"},
           "i1": {"ana": "A", "bo": "A", "cy": "B"},
           "i2": {"ana": "B", "bo": "B", "cy": "tie"},
           "i3": {"ana": "tie", "bo": "B", "cy": "B"}}


def hand_alpha_and_kappa(ballots: dict[str, dict[str, str]]) -> tuple[Fraction, Fraction]:
    """Krippendorff's nominal alpha from the coincidence matrix and Fleiss' kappa from its definition, in exact
    fractions, for items that all have the same number of votes."""
    labels = ("A", "B", "tie")
    counts = [[list(votes.values()).count(lab) for lab in labels] for votes in ballots.values()]
    m = sum(counts[0])
    # coincidences between different labels: sum over units of n_c * n_k / (m - 1)
    disagreeing = sum(Fraction(row[c] * row[k], m - 1) for row in counts for c in range(3) for k in range(3) if c != k)
    totals = [sum(row[c] for row in counts) for c in range(3)]
    n = sum(totals)
    expected = sum(Fraction(totals[c] * totals[k]) for c in range(3) for k in range(3) if c != k)
    alpha = 1 - (n - 1) * disagreeing / expected
    p_items = [Fraction(sum(x * x for x in row) - m, m * (m - 1)) for row in counts]
    p_mean = sum(p_items) / len(p_items)
    p_chance = sum(Fraction(t, n) ** 2 for t in totals)
    return alpha, (p_mean - p_chance) / (1 - p_chance)


def test_three_annotators_give_the_hand_computed_alpha_kappa_and_per_annotator_rows():
    alpha, kappa = hand_alpha_and_kappa(BALLOTS)
    assert (alpha, kappa) == (Fraction(4, 15), Fraction(1, 5))  # worked on paper too
    annotations = [annotation(item, who, PREFERENCE[lab], shown_first=1)
                   for item, votes in BALLOTS.items() for who, lab in votes.items()]
    result = annotator_agreement(annotations)
    assert result["alpha"] == pytest.approx(float(alpha))
    assert result["fleiss"]["kappa"] == pytest.approx(float(kappa))
    assert (result["n_items"], result["votes"], result["annotators"]) == (4, 12, 3)
    assert result["pairwise_agreement"] == pytest.approx(0.5) and result["pairs"] == 12  # 6 of 12 pairs agree
    low, high = result["alpha_ci"]
    assert -1 <= low <= result["alpha"] <= high <= 1
    rows = result["by_annotator"]
    # ana: i0 agrees with the others' A, i3 her tie against their B; i1 and i2 have no single majority of the others
    assert (rows["ana"]["agreement_with_others"], rows["ana"]["shared_items"]) == (0.5, 2)
    assert (rows["bo"]["agreement_with_others"], rows["bo"]["shared_items"]) == (1.0, 1)
    assert rows["cy"]["agreement_with_others"] == pytest.approx(1 / 3) and rows["cy"]["shared_items"] == 3
    assert [rows[who]["tie_rate"] for who in ("ana", "bo", "cy")] == [0.25, 0.0, 0.25]
    # everything was shown with output_1 first: the first-shown share is the share of A among decisive votes
    assert rows["ana"]["first_position_rate"] == pytest.approx(2 / 3)


def test_agreement_needs_an_item_with_two_votes_and_leaves_out_controls_and_failures():
    single = [annotation(f"i{k}", "ana", 1) for k in range(3)]
    alone = annotator_agreement(single)
    assert (alone["n_items"], alone["alpha"], alone["fleiss"]["kappa"]) == (0, None, None)
    assert alone["by_annotator"]["ana"]["tie_rate"] == 0.0  # an annotator's own rates need no overlap
    assert annotator_agreement([]) is None
    mixed = single + [annotation("i0", "bo", 1), annotation("i1", "bo", None),
                      annotation("i1", "bo", 2, control="other-answer", control_correct=2)]
    result = annotator_agreement(mixed)
    assert (result["n_items"], result["votes"]) == (1, 2)
    assert result["alpha"] is None  # every vote the same label: alpha is undefined, not 1
    assert result["pairwise_agreement"] == 1.0


def pairs(n: int, long: bool = True) -> list[Pair]:
    tail = " It has a second sentence that makes the answer much longer than its start." if long else ""
    return [Pair(f"instruction {i}", f"A answers {i}.{tail}", f"B answers {i}.{tail}", "gen-a", "gen-b", "set")
            for i in range(n)]


def test_first_sentence_only_when_it_is_at_most_half():
    assert first_sentence("Paris. It is the capital of France, on the Seine.") == "Paris."
    assert first_sentence("One long opening sentence about many things. Short.") is None
    assert first_sentence("No second sentence here") is None


def test_controls_are_balanced_from_different_instructions_and_of_both_kinds():
    source = pairs(10)
    controls = make_controls(source, 10, random.Random(1))
    assert sorted(c.correct for c in controls) == ["A"] * 5 + ["B"] * 5
    assert len({c.pair.instruction for c in controls}) == 10
    assert {c.kind for c in controls} == {"other-answer", "first-sentence"}
    answers = {p.instruction: (p.output_a, p.output_b) for p in source}
    for c in controls:
        real = c.pair.output_a if c.correct == "A" else c.pair.output_b
        wrong = c.pair.output_b if c.correct == "A" else c.pair.output_a
        assert real in answers[c.pair.instruction]
        if c.kind == "first-sentence":
            assert real.startswith(wrong) and len(wrong) <= len(real) / 2
        else:  # the same model's answer to another instruction
            model = "A" if real.startswith("A answers") else "B"
            assert wrong.startswith(f"{model} answers") and wrong not in answers[c.pair.instruction]
    assert make_controls(source, 10, random.Random(1)) == controls  # seeded


def test_more_controls_than_the_pool_is_one_clear_error():
    assert control_pool(pairs(1, long=False)) == []  # one short answer: no other answer, nothing to cut
    assert len(control_pool(pairs(3, long=False))) == 3
    with pytest.raises(UserError, match=r"--controls 4 is more than the 3 control pairs these 3 instructions"):
        make_controls(pairs(3, long=False), 4, random.Random(0))


def test_control_accuracy_counts_ties_half_flags_and_stays_out_of_the_win_rate():
    real = [annotation("i0", "ana", 2), annotation("i1", "ana", 1)]
    controls = [annotation("c0", "ana", 1, control="other-answer", control_correct=1),
                annotation("c1", "ana", 1.5, control="first-sentence", control_correct=2),
                annotation("c0", "bo", 2, control="other-answer", control_correct=1),
                annotation("c1", "bo", None, control="first-sentence", control_correct=2)]
    result = control_summary(real + controls)
    assert result["by_annotator"]["ana"] == {"n": 2, "accuracy": 0.75, "flagged": True}
    assert result["by_annotator"]["bo"] == {"n": 1, "accuracy": 0.0, "flagged": True}
    assert (result["n"], result["failed"], result["accuracy"]) == (3, 1, 0.5)
    assert summarize(real + controls) == summarize(real)
    assert control_summary(real) is None
    with pytest.raises(UserError, match="item 0: a control .* needs 'control_correct' 1 or 2"):
        control_summary([annotation("c0", "ana", 1, control="other-answer")])


def test_humans_against_a_judge_on_crafted_files_match_hand_counts():
    humans = [
        annotation("q0", "ana", 1), annotation("q0", "bo", 1),  # judge A: two agreeing pairs
        annotation("q1", "ana", 2), annotation("q1", "bo", 1.5),  # judge B: one agreeing, one tie against B
        annotation("q2", "ana", 1),  # judge tie
        annotation("q3", "ana", 2),  # the judge saw the sides the other way round and said A there: B here
        annotation("q4", "ana", 1),  # the judge failed: left out
        annotation("q5", "ana", 1),  # the judge never judged q5
        annotation("c0", "ana", 2, control="other-answer", control_correct=2),  # controls are left out
    ]
    judge = [annotation("q0", "judge", 1.2), annotation("q1", "judge", 2), annotation("q2", "judge", 1.5),
             annotation("q3", "judge", 1, output_1="two q3", output_2="one q3"), annotation("q4", "judge", None),
             annotation("c0", "judge", 1, control="other-answer", control_correct=2)]
    result = compare(humans, judge)
    # rows humans, columns judge, in A, B, tie: (A,A) x2, (B,B) x2 (q1, q3), (tie,B) x1, (A,tie) x1
    assert result["confusion"] == [[2, 0, 1], [0, 2, 0], [0, 1, 0]]
    assert (result["pairs"], result["instructions"]) == (6, 4)
    assert result["agreement"] == pytest.approx(4 / 6)
    assert (result["decisive"], result["decisive_agreement"]) == (4, 1.0)
    # Cohen's kappa by hand: p_o = 4/6; human margins A 3, B 2, tie 1; judge margins A 2, B 3, tie 1
    p_chance = (3 * 2 + 2 * 3 + 1 * 1) / 36
    assert result["cohen_kappa"] == pytest.approx((4 / 6 - p_chance) / (1 - p_chance))


def test_cohens_kappa_matches_the_published_example():
    # Wikipedia, "Cohen's kappa", first example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15; kappa 0.4
    cells = [("A", "A", 20), ("A", "B", 5), ("B", "A", 10), ("B", "B", 15)]
    first, second = [], []
    for k, (mine, theirs, count) in enumerate(cells):
        for j in range(count):
            first.append(annotation(f"p{k}-{j}", "reader 1", PREFERENCE[mine]))
            second.append(annotation(f"p{k}-{j}", "reader 2", PREFERENCE[theirs]))
    assert compare(first, second)["cohen_kappa"] == pytest.approx(0.4)


def test_comparing_files_of_different_pairs_is_refused():
    humans = [annotation("q0", "ana", 1)]
    with pytest.raises(UserError, match="judged different answers to the same instruction 'q0'"):
        compare(humans, [annotation("q0", "judge", 1, output_1="other text")], "votes", "judge")
    with pytest.raises(UserError, match="share no judged pair"):
        compare(humans, [annotation("elsewhere", "judge", 1)], "votes", "judge")
