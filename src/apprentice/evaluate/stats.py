"""Statistics of a pairwise comparison, from one model's point of view: `summarize(annotations, model=None)`.

Input is a list of AlpacaEval-style annotations (output_1, generator_1, output_2, generator_2, preference, and
optionally dataset, swap_agreement and per-order verdicts as `apprentice judge` writes them). Preferences follow
AlpacaEval: 1 = output_1 wins, 2 = output_2 wins, 0 or 1.5 = tie (AlpacaEval 1's GPT-4 file uses 0), and any
number between 1 and 2 is a soft preference, 1 + the probability that output_2 wins, as AlpacaEval 2's weighted
annotators and `apprentice judge` with log-probabilities write it; numbers as strings accepted; null is a failed
judgment, counted apart and left out of every rate.

Whose win rate: `model` names a generator; by default it is the first annotation's generator_2, which is the model
being evaluated in AlpacaEval's files and the `--b` file of `apprentice judge`. Each annotation is read from that
model's side wherever it sits (output_1 or output_2), so files with mixed sides tally correctly; when both sides
carry the same name, output_2 is the model's.

Each comparison gets a score from the model's side: preference - 1 when the model is output_2, 2 - preference when
it is output_1; so 1 a win, 0 a loss, 0.5 a tie, and a fraction for a soft preference.

What it reports and how:
- the win rate, the mean score: (wins + ties/2) / n when every preference is hard, AlpacaEval 2's
  mean(preference - 1) when they are fractions;
- wins, ties and losses: a score above 0.5 is a win, below 0.5 a loss, exactly 0.5 a tie, so a 1.8444 counts as a
  win; and how many preferences were fractional (neither 1, 2 nor a tie);
- a 95% bootstrap interval for the win rate, resampling the instructions' scores (scipy.stats.bootstrap,
  percentile method, seeded);
- the decisive share wins / (wins + losses) with its 95% Wilson interval (statsmodels) and the exact two-sided sign
  test on those decisive comparisons (scipy.stats.binomtest);
- mean output lengths in characters and words for both sides;
- a length-controlled win rate: a logistic regression (statsmodels GLM) of "the model wins" on
  tanh(length difference / its standard deviation), with the length difference in characters, predicted at zero
  difference. A comparison enters as a win row weighted by its score and a loss row weighted by 1 - score, so a
  tie is half of each;
- the judge's swap agreement (both orders' hard verdicts agreed) and position bias: the share of decisive
  single-order verdicts that picked the output shown first and, for judgments from log-probabilities, the mean
  probability the judge gave the output shown first (0.5 = no lean), when the annotations carry them;
- the counts and win rate per `dataset`.

Control pairs (`control` set, see `evaluate.controls`) check the voter and are left out of all of it.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from apprentice.errors import UserError

TIE = 1.5


def read_preference(value: object, index: int) -> float | None:
    """Normalise one AlpacaEval preference to a number in [1, 2] (1 and 2 wins, 1.5 a tie, fractions between soft
    preferences; 0, a tie, becomes 1.5) or None (failed judgment)."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if number == 0.0:
        return TIE
    if number is None or not 1.0 <= number <= 2.0:  # NaN fails the comparison too
        raise UserError(f"item {index}: preference {value!r} is not a number from 1 to 2 (1 or 2 a win, 1.5 a "
                        f"tie, a fraction between a soft preference), 0 (a tie) or null (a failed judgment)")
    return number


@dataclass(frozen=True)
class Comparison:
    """One judged instruction from the chosen model's side."""

    score: float  # 1 win, 0.5 tie, 0 loss, a fraction between for a soft preference
    own: str  # the model's output
    other: str  # the opponent's output
    dataset: str | None


def _field(item: dict, key: str, index: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise UserError(f"item {index}: {key!r} must be a string, found {type(value).__name__}")
    return value


def comparisons(annotations: Sequence[dict], model: str | None = None) -> tuple[str, list[str], list[Comparison], int]:
    """(model, opponents, comparisons, failed): the annotations read from `model`'s side."""
    if not annotations:
        raise UserError("no annotations to tally")
    for index, item in enumerate(annotations):
        if not isinstance(item, dict):
            raise UserError(f"item {index} is a {type(item).__name__}, expected an annotation object")
    if model is None:
        model = annotations[0].get("generator_2") or "output_2"
    opponents: set[str] = set()
    result: list[Comparison] = []
    failed = 0
    for index, item in enumerate(annotations):
        if "preference" not in item:
            hint = " (a model outputs file? judge it first: apprentice judge)" if "output" in item else ""
            raise UserError(f"item {index} has no 'preference'{hint}")
        preference = read_preference(item["preference"], index)
        output_1, output_2 = _field(item, "output_1", index), _field(item, "output_2", index)
        generator_1 = item.get("generator_1") or "output_1"
        generator_2 = item.get("generator_2") or "output_2"
        if model == generator_2:
            own_side, own, other, opponent = 2.0, output_2, output_1, generator_1
        elif model == generator_1:
            own_side, own, other, opponent = 1.0, output_1, output_2, generator_2
        else:
            raise UserError(f"item {index} compares {generator_1!r} with {generator_2!r}, neither is {model!r}: "
                            f"pick one with --model")
        opponents.add(opponent)
        if preference is None:
            failed += 1
            continue
        # exact for every preference in [1, 2] (Sterbenz), so hard verdicts still score exactly 0, 0.5 and 1
        score = preference - 1.0 if own_side == 2.0 else 2.0 - preference
        dataset = item.get("dataset")
        result.append(Comparison(score, own, other, dataset if isinstance(dataset, str) else None))
    return model, sorted(opponents), result, failed


def _counts(scores: Sequence[float]) -> dict:
    """n, wins (score > 0.5), ties (exactly 0.5), losses (< 0.5), the win rate (mean score) and the sign test on
    the wins and losses."""
    wins = sum(s > 0.5 for s in scores)
    ties = sum(s == 0.5 for s in scores)
    losses = len(scores) - wins - ties
    n = len(scores)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": math.fsum(scores) / n if n else None, "sign_test_p": sign_test(wins, losses)}


def sign_test(wins: int, losses: int) -> float | None:
    """Exact two-sided sign test on decisive comparisons (ties dropped): can wins vs losses be a coin's?"""
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None


def wilson_interval(wins: int, losses: int) -> tuple[float, float] | None:
    """95% Wilson interval for the decisive share wins / (wins + losses)."""
    from statsmodels.stats.proportion import proportion_confint

    if wins + losses == 0:
        return None
    low, high = proportion_confint(wins, wins + losses, alpha=0.05, method="wilson")
    return float(low), float(high)


def bootstrap_interval(scores: Sequence[float], seed: int = 0, resamples: int = 10_000) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the win rate (the mean score), resampling instructions."""
    from scipy.stats import bootstrap

    if len(scores) < 2:
        return None
    if len(set(scores)) == 1:  # every resample is the same; scipy would warn about a degenerate distribution
        return float(scores[0]), float(scores[0])
    result = bootstrap((np.asarray(scores, dtype=float),), np.mean, n_resamples=resamples, confidence_level=0.95,
                       method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def length_controlled_win_rate(items: Sequence[Comparison]) -> float | None:
    """The win rate a logistic regression on tanh(standardised length difference) predicts at equal lengths."""
    import statsmodels.api as sm

    if not items:
        return None
    scores = np.array([c.score for c in items])
    difference = np.array([len(c.own) - len(c.other) for c in items], dtype=float)
    spread = difference.std()
    if spread == 0 or scores.min() == scores.max():
        # no length signal, or nothing to separate: the regression reduces to the plain rate
        return float(scores.mean())
    x = np.tanh(difference / spread)
    # each comparison becomes a win row and a loss row weighted by its score, so a tie is half of each
    design = sm.add_constant(np.concatenate([x, x]))
    outcome = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    weights = np.concatenate([scores, 1 - scores])
    keep = weights > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-separation warnings: the prediction at zero is still the estimate
        fit = sm.GLM(outcome[keep], design[keep], family=sm.families.Binomial(), freq_weights=weights[keep]).fit()
    return float(1 / (1 + math.exp(-fit.params[0])))


def _mean_lengths(texts: Sequence[str]) -> dict:
    if not texts:
        return {"chars": None, "words": None}
    return {"chars": float(np.mean([len(t) for t in texts])), "words": float(np.mean([len(t.split()) for t in texts]))}


def _first_shown_probability(order: dict) -> float | None:
    """The probability the judge gave the output it saw first, from an order's `p_output_2` (swap undone)."""
    p = order.get("p_output_2")
    if not isinstance(p, int | float) or isinstance(p, bool) or order.get("shown_first") not in (1, 2):
        return None
    return float(p) if order["shown_first"] == 2 else 1.0 - p


def judge_consistency(annotations: Sequence[dict]) -> dict:
    """Swap agreement over annotations judged in both orders, and the judge's lean towards the first-shown output:
    the share of its decisive verdicts and, where it gave probabilities, its mean probability for that output. A
    probability judge's preferences cancel a lean common to both orders, so a first_position_prob far from 0.5
    next to preferences near 1.5 shows a judge that mostly read positions."""
    orders = [order for a in annotations for order in (a.get("orders") or []) if isinstance(order, dict)]
    agreements = [a["swap_agreement"] for a in annotations if isinstance(a.get("swap_agreement"), bool)]
    firsts = [order.get("verdict") == "A" for order in orders if order.get("verdict") in ("A", "B")]
    probabilities = [p for p in map(_first_shown_probability, orders) if p is not None]
    return {
        "swap_agreement": sum(agreements) / len(agreements) if agreements else None,
        "swap_checked": len(agreements),
        "first_position_share": sum(firsts) / len(firsts) if firsts else None,
        "position_verdicts": len(firsts),
        "first_position_prob": math.fsum(probabilities) / len(probabilities) if probabilities else None,
        "position_probs": len(probabilities),
    }


def is_control(annotation: object) -> bool:
    """Whether an annotation is a control pair (`evaluate.controls`): a check of the voter, not a comparison."""
    return isinstance(annotation, dict) and bool(annotation.get("control"))


def summarize(annotations: Sequence[dict], model: str | None = None, seed: int = 0) -> dict:
    """Every statistic above as one JSON-ready dict (rates as fractions, not percentages); control pairs are left
    out (see `evaluate.controls` for their accuracy)."""
    annotations = [a for a in annotations if not is_control(a)]
    model, opponents, items, failed = comparisons(annotations, model)
    scores = [c.score for c in items]
    counts = _counts(scores)
    low_high = bootstrap_interval(scores, seed)
    decisive = counts["wins"] + counts["losses"]
    by_dataset: dict[str, list[float]] = defaultdict(list)
    for c in items:
        by_dataset[c.dataset or "(none)"].append(c.score)
    return {
        "model": model,
        "opponent": ", ".join(opponents),
        **counts,
        "failed": failed,
        "fractional": sum(s not in (0.0, 0.5, 1.0) for s in scores),
        "win_rate_ci": list(low_high) if low_high else None,
        "decisive_share": counts["wins"] / decisive if decisive else None,
        "decisive_share_ci": list(wilson_interval(counts["wins"], counts["losses"]) or []) or None,
        "length_controlled_win_rate": length_controlled_win_rate(items),
        "mean_length": {"model": _mean_lengths([c.own for c in items]),
                        "opponent": _mean_lengths([c.other for c in items])},
        **judge_consistency(annotations),
        "by_dataset": {name: _counts(s) for name, s in sorted(by_dataset.items())}
        if any(c.dataset for c in items) else {},
    }
