"""The judge-answer parser, table-driven: the shapes judges answer in, the ambiguous ones that must be None, and
what first-token log-probabilities say (a verdict, and the soft preference P(B) / (P(A) + P(B)))."""

import math

import pytest

from apprentice.evaluate.verdict import parse_verdict, second_probability, verdict_from_logprobs


@pytest.mark.parametrize("text, expected", [
    # bare labels, any case, with punctuation and markdown
    ("A", "A"), ("b", "B"), ("  B.\n", "B"), ("**A**", "A"), ("`B`", "B"), ('"A"', "A"),
    ("Output (a)", "A"), ("Output (b)", "B"), ("Response A", "A"), ("(b)", "B"), ("Assistant B", "B"),
    ("Tie", "tie"), ("tie.", "tie"), ("Both", "tie"), ("Neither", "tie"),
    # verdict first, explanation after
    ("B\n\nExplanation: Output (a) is wrong about the date.", "B"),
    ("A. It answers the question directly.", "A"),
    ("Tie. Both are fine.", "tie"),
    # judge-style brackets
    ("[[A]]", "A"), ("My final verdict is [[B]].", "B"), ("[[C]]", "tie"), ("[[tie]]", "tie"),
    # labelled answers, anywhere in prose
    ("Answer: B", "B"), ("**Answer:** B", "B"), ("### Verdict\nA", "A"), ("Final answer - b", "B"),
    ("After comparing both, the answer is: Output (b).", "B"), ("The better response is A.", "A"),
    ("Verdict: tie", "tie"), ("Winner: Response (a)", "A"),
    ("The best response is indeed Response B, which is the correct answer.", "B"),
    ("Output (a): fine.\nOutput (b): wrong.\nVerdict: B", "B"),
    # comparisons
    ("A is better", "A"), ("a is better than b", "A"), ("A is a better response", "A"),
    ("Response B is better because it is more detailed.", "B"),
    ("I think Output (b) is clearly better than Output (a).", "B"),
    ("Response A is more helpful than Response B.", "A"),
    ("Output (a) is worse than output (b).", "B"), ("Output (b) wins.", "B"), ("I prefer response A.", "A"),
    ("Both are good, but B is slightly better.", "B"),
    # ties in prose
    ("Both are equally good.", "tie"), ("Both responses are equally helpful.", "tie"),
    ("Neither is better.", "tie"), ("It's a tie.", "tie"), ("There is no clear winner here.", "tie"),
    ("They are of equal quality.", "tie"),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "hello world", "I cannot decide.",
    "A or B",  # names both, decides nothing
    "[[A]] and [[B]]", "Answer: A. Verdict: B",  # contradicts itself within one kind of evidence
    "A is better. B is better.",
    "The best response is A, but the best answer is actually B.",
    "This is a better answer",  # the article "a" is not a label
    "I prefer a shorter reply",
    "Output (a): lists three actors.",  # a description, not a verdict
    "Your reply (A, B or tie)", "Reply with A, B, or tie.",  # the prompt's answer menu echoed back
])
def test_no_or_ambiguous_verdict_is_none(text):
    assert parse_verdict(text) is None


def lp(**probabilities):
    return {token.replace("_", " "): math.log(p) for token, p in probabilities.items()}


@pytest.mark.parametrize("top, expected", [
    (lp(A=0.9, B=0.05), "A"),
    ({" B": math.log(0.7), "A": math.log(0.2)}, "B"),
    ({"▁A": math.log(0.4), " a": math.log(0.3), "B": math.log(0.2)}, "A"),  # " a" and "▁A" add up
    ({"Tie": math.log(0.6), "A": math.log(0.3)}, "tie"),
    ({"(B": math.log(0.8)}, "B"),
    ({"The": math.log(0.8), "A": math.log(0.1)}, None),  # the verdict is not in the first token
    ({"A": math.log(0.4), "B": math.log(0.4)}, None),  # no strict winner
    ({}, None), (None, None),
])
def test_verdict_from_logprobs(top, expected):
    assert verdict_from_logprobs(top) == expected


@pytest.mark.parametrize("top, expected", [
    (lp(A=0.9, B=0.1), 0.1),
    (lp(A=0.2, B=0.6), 0.75),
    # the spellings of one label add up
    ({"▁A": math.log(0.2), " a": math.log(0.2), "[B": math.log(0.1), "Ġb": math.log(0.1)}, 1 / 3),
    ({"Tie": math.log(0.6), "A": math.log(0.1), "B": math.log(0.3)}, 0.75),  # tie mass is left aside
    ({"The": math.log(0.9), "B": math.log(0.01)}, 1.0),  # any label mass counts, however small
    (lp(A=0.5), 0.0),
    ({"The": math.log(0.9), "Tie": math.log(0.1)}, None),  # nothing on A or B: nothing measured
    ({}, None), (None, None),
])
def test_second_probability(top, expected):
    if expected is None:
        assert second_probability(top) is None
    else:
        assert second_probability(top) == pytest.approx(expected, rel=1e-12)
