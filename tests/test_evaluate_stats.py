"""Pairwise statistics: exact reproductions of published numbers, the Alpaca 90-vs-89 result, AlpacaEval 2's
fractional preferences, and bad input."""

import csv
import json
import math

import pytest

from apprentice.errors import UserError
from apprentice.evaluate.stats import (
    comparisons,
    length_controlled_win_rate,
    read_preference,
    summarize,
)

GPT4_FILE = "alpaca_eval/alpaca-7b_vs_text_davinci_003.alpaca_eval_gpt4.annotations.json"


def annotation(preference, own="x" * 10, other="y" * 10, dataset=None, model_side=2, **extra):
    """An annotation with the model 'm' (against 'r') on `model_side`."""
    sides = {"output_1": other, "generator_1": "r", "output_2": own, "generator_2": "m"}
    if model_side == 1:
        sides = {"output_1": own, "generator_1": "m", "output_2": other, "generator_2": "r"}
    return {"instruction": "i", **sides, "preference": preference, "dataset": dataset, **extra}


@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (2, 2.0), (1.5, 1.5), (0, 1.5), (1.0, 1.0), ("1", 1.0), ("2", 2.0), ("0", 1.5), (" 1.5 ", 1.5),
    (1.8444, 1.8444), (1.2, 1.2), ("1.0001", 1.0001), (1.9999999, 1.9999999), (None, None),
])
def test_read_preference(value, expected):
    assert read_preference(value, 0) == expected


@pytest.mark.parametrize("value", [3, 2.5, 2.0001, 0.9999, 0.5, -1, "x", "a", "", "nan", math.nan, math.inf, True,
                                   [1], {"p": 1}])
def test_unknown_preferences_are_errors_naming_the_item(value):
    with pytest.raises(UserError, match=r"^item 7: preference .* is not a number from 1 to 2"):
        read_preference(value, 7)


def test_gpt4_annotations_reproduce_the_leaderboard(shared_data):
    annotations = json.loads((shared_data / GPT4_FILE).read_text())
    summary = summarize(annotations)
    assert (summary["model"], summary["opponent"]) == ("alpaca-7b", "text_davinci_003")
    assert (summary["wins"], summary["losses"], summary["ties"], summary["failed"]) == (205, 584, 16, 0)
    assert summary["fractional"] == 0
    with open(shared_data / "alpaca_eval/alpaca_eval_gpt4_leaderboard.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["name"] == "Alpaca 7B")
    assert float(row["win_rate"]) == pytest.approx(26.4596, abs=1e-4)
    assert 100 * summary["win_rate"] == pytest.approx(float(row["win_rate"]), abs=1e-4)
    assert round(summary["mean_length"]["model"]["chars"]) == int(row["avg_length"])
    assert summary["by_dataset"]["selfinstruct"] | {"win_rate": None, "sign_test_p": None} == {
        "n": 252, "wins": 63, "ties": 8, "losses": 181, "win_rate": None, "sign_test_p": None}
    assert sum(d["n"] for d in summary["by_dataset"].values()) == 805


def test_the_other_side_of_the_gpt4_annotations(shared_data):
    annotations = json.loads((shared_data / GPT4_FILE).read_text())
    summary = summarize(annotations, model="text_davinci_003")
    assert (summary["wins"], summary["losses"], summary["ties"]) == (584, 205, 16)
    assert summary["win_rate"] == pytest.approx(1 - 0.264596, abs=1e-6)


def test_alpaca_90_vs_89_is_a_coin_toss():
    summary = summarize([annotation(2)] * 90 + [annotation(1)] * 89)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (90, 0, 89)
    assert summary["sign_test_p"] == pytest.approx(1.0, abs=1e-3)
    low, high = summary["decisive_share_ci"]
    assert (round(low, 3), round(high, 3)) == (0.430, 0.575)
    low, high = summary["win_rate_ci"]  # seeded bootstrap over the 179 instructions
    assert (round(low, 3), round(high, 3)) == (0.430, 0.575)
    assert summary["win_rate"] == pytest.approx(90 / 179)


def test_summary_counts_rates_and_failures():
    items = [annotation(2)] * 6 + [annotation(1.5)] * 2 + [annotation(1)] * 2 + [annotation(None)] * 3
    summary = summarize(items)
    assert (summary["n"], summary["wins"], summary["ties"], summary["losses"], summary["failed"]) == (10, 6, 2, 2, 3)
    assert summary["win_rate"] == 0.7
    assert summary["fractional"] == 0
    assert summary["decisive_share"] == pytest.approx(0.75)
    assert summary["sign_test_p"] == pytest.approx(0.2890625)  # 2 * P(X >= 6 | n=8, p=1/2)
    assert summary["by_dataset"] == {}


# AlpacaEval 2 style: a weighted annotator stores 1 + P(output_2 wins); the evaluated model is output_2
FRACTIONAL = [1.8444, 1.0, 1.2, 2.0, 1.5, 1.9, "1.65", None]
FRACTIONAL_SCORES = [0.8444, 0.0, 0.2, 1.0, 0.5, 0.9, 0.65]  # preference - 1, by hand


def alpaca_eval_2(preferences) -> list[dict]:
    return [annotation(p, own="x" * (10 + i), dataset="helpful_base" if i % 2 else "koala",
                       annotator="weighted_alpaca_eval_gpt4_turbo") for i, p in enumerate(preferences)]


def test_fractional_preferences_are_scored_as_they_are():
    summary = summarize(alpaca_eval_2(FRACTIONAL))
    assert summary["win_rate"] == pytest.approx(sum(FRACTIONAL_SCORES) / 7, abs=1e-12)  # 0.58491...
    # decisive by the side of 0.5: 0.8444, 1.0, 0.9 and 0.65 win; 0.0 and 0.2 lose; 0.5 is the tie
    assert (summary["n"], summary["wins"], summary["losses"], summary["ties"], summary["failed"]) == (7, 4, 2, 1, 1)
    assert summary["fractional"] == 4
    assert summary["sign_test_p"] == pytest.approx(2 * (15 + 6 + 1) / 64)  # 2 * P(X >= 4 | n=6, p=1/2)
    assert summary["decisive_share"] == pytest.approx(4 / 6)
    low, high = summary["decisive_share_ci"]
    assert (round(low, 3), round(high, 3)) == (0.300, 0.903)
    low, high = summary["win_rate_ci"]
    assert low < summary["win_rate"] < high and 0 <= low and high <= 1
    assert 0 < summary["length_controlled_win_rate"] < 1
    assert summary["by_dataset"]["koala"]["win_rate"] == pytest.approx((0.8444 + 0.2 + 0.5 + 0.65) / 4)


def test_fractional_preferences_from_the_other_side():
    summary = summarize(alpaca_eval_2(FRACTIONAL), model="r")
    assert summary["win_rate"] == pytest.approx(1 - sum(FRACTIONAL_SCORES) / 7, abs=1e-12)
    assert (summary["wins"], summary["losses"], summary["ties"], summary["fractional"]) == (2, 4, 1, 4)
    # the model as output_1 scores 2 - preference, wherever it sits
    found = comparisons([annotation(1.25, model_side=1), annotation(1.25, model_side=2)], model="m")[2]
    assert [c.score for c in found] == [0.75, 0.25]


def test_bootstrap_interval_is_seeded():
    items = [annotation(2)] * 30 + [annotation(1)] * 20 + [annotation(0)] * 5
    assert summarize(items, seed=3)["win_rate_ci"] == summarize(items, seed=3)["win_rate_ci"]
    low, high = summarize(items)["win_rate_ci"]
    assert low < (30 + 2.5) / 55 < high


def test_model_is_found_on_either_side_by_name():
    items = [annotation(2, model_side=2), annotation(1, model_side=1), annotation(2, model_side=1)]
    model, opponents, found, failed = comparisons(items)
    assert (model, opponents, failed) == ("m", ["r"], 0)
    assert [c.score for c in found] == [1.0, 1.0, 0.0]
    assert [c.score for c in comparisons(items, model="r")[2]] == [0.0, 0.0, 1.0]


def test_same_name_on_both_sides_reads_output_2_as_the_model():
    item = {"output_1": "a", "generator_1": "same", "output_2": "bb", "generator_2": "same", "preference": 2}
    [found] = comparisons([item])[2]
    assert (found.score, found.own, found.other) == (1.0, "bb", "a")


@pytest.mark.parametrize("items, message", [
    ([], "no annotations to tally"),
    (["x"], "item 0 is a str"),
    ([annotation(2), {"output_1": "a", "output_2": "b"}], "item 1 has no 'preference'"),
    ([{"instruction": "i", "output": "o"}], "a model outputs file?"),
    ([annotation(2), annotation(7)], "item 1: preference 7 is not"),
    ([annotation(2) | {"output_1": None}], "item 0: 'output_1' must be a string"),
    ([annotation(2), annotation(2) | {"generator_2": "z"}], "item 1 compares 'r' with 'z', neither is 'm'"),
])
def test_bad_annotations(items, message):
    with pytest.raises(UserError) as info:
        summarize(items)
    assert message in str(info.value)


def test_breakdown_by_dataset():
    items = [annotation(2, dataset="x")] * 3 + [annotation(1, dataset="y")] * 2 + [annotation(1.5, dataset="x")]
    by = summarize(items)["by_dataset"]
    assert by["x"] | {"sign_test_p": 0} == {"n": 4, "wins": 3, "ties": 1, "losses": 0, "win_rate": 0.875,
                                            "sign_test_p": 0}
    assert (by["y"]["losses"], by["y"]["win_rate"]) == (2, 0.0)


def lengths_decide(longer: int, shorter: int) -> list[dict]:
    """The model wins 80% of the time when its answer is longer and 20% when it is shorter."""
    def group(count, own, other, share_won):
        won = round(count * share_won)
        return ([annotation(2, own=own, other=other)] * won + [annotation(1, own=own, other=other)] * (count - won))
    return group(longer, "w " * 40, "w " * 10, 0.8) + group(shorter, "w " * 10, "w " * 40, 0.2)


def test_length_controlled_win_rate_removes_a_length_advantage():
    balanced = summarize(lengths_decide(50, 50))
    assert balanced["win_rate"] == pytest.approx(0.5)
    assert balanced["length_controlled_win_rate"] == pytest.approx(0.5, abs=1e-6)
    # mostly longer answers: the raw rate rewards length (0.65); at equal length the model is even
    longer = summarize(lengths_decide(60, 20))
    assert longer["win_rate"] == pytest.approx(0.65)
    assert longer["length_controlled_win_rate"] == pytest.approx(0.5, abs=1e-6)
    assert longer["mean_length"]["model"] == {"chars": (60 * 80 + 20 * 20) / 80, "words": (60 * 40 + 20 * 10) / 80}


def test_length_controlled_degenerate_cases_fall_back_to_the_plain_rate():
    same_length = comparisons([annotation(2), annotation(1), annotation(0)])[2]
    assert length_controlled_win_rate(same_length) == pytest.approx(0.5)
    all_wins = comparisons([annotation(2, own="long answer"), annotation(2, own="s")])[2]
    assert length_controlled_win_rate(all_wins) == 1.0
    assert length_controlled_win_rate([]) is None


def test_ties_enter_the_length_regression_as_half():
    items = [annotation(1.5, own="w " * k, other="w " * 5) for k in range(1, 12)]
    assert summarize(items)["length_controlled_win_rate"] == pytest.approx(0.5, abs=1e-6)


def test_judge_consistency_from_orders():
    def judged(preference, agreement, verdicts):
        return annotation(preference, swap_agreement=agreement,
                          orders=[{"shown_first": i + 1, "verdict": v} for i, v in enumerate(verdicts)])
    items = [judged(1.5, False, ["A", "A"]), judged(2, True, ["B", "A"]), judged(2, True, ["B", "A"]),
             judged(None, None, ["A", None]), annotation(1.5)]
    summary = summarize(items)
    assert (summary["swap_agreement"], summary["swap_checked"]) == (2 / 3, 3)
    assert (summary["first_position_share"], summary["position_verdicts"]) == (5 / 7, 7)
