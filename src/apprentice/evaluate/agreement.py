"""How far voters agree: annotators with each other where items have two or more votes, and two sets of judgments on
the same pairs (humans against the LLM judge).

    from apprentice.evaluate.agreement import annotator_agreement, compare
    annotator_agreement(annotations)       # alpha with interval, Fleiss' kappa, pairwise agreement, per annotator
    compare(human_annotations, judge_annotations)   # agreement with ties, on decisive pairs, Cohen's kappa, table

Every vote is read as a label: A (output_1 better), B (output_2 better) or tie, a fractional preference by the side
it leans to. Control pairs and failed judgments are left out; an item is one (instruction, output_1, output_2).

Between annotators, on the items with at least two votes:
- Krippendorff's alpha, nominal (the `krippendorff` package, from each item's label counts), with a 95% percentile
  bootstrap interval that resamples items (1,000 resamples, seeded); None when every vote has the same label;
- Fleiss' kappa (statsmodels), which needs the same number of votes on every item: it is computed on the items
  with the most common number of votes and says how many those are;
- raw pairwise agreement: the share of pairs of votes on the same item that agree;
- per annotator: agreement with the majority of the others on the items they share (items where the others have
  no single most common label are left out), the share of ties, and the share of decisive votes that picked the
  side shown first (from `shown_first`, which `apprentice annotate` records).

Two sets (`compare`): each judgment of the first set is paired with every judgment of the second set on the same
instruction (a votes database gives several per item, so each human vote meets the judge's verdict once, as
FastChat's agreement counts do). Reported: agreement counting ties, agreement where both picked a winner, Cohen's
kappa over A/B/tie (statsmodels) and the confusion table.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from apprentice.errors import UserError
from apprentice.evaluate.stats import TIE, is_control, read_preference

LABELS = ("A", "B", "tie")
ALPHA_RESAMPLES = 1000


def label(preference: float) -> str:
    return "A" if preference < TIE else "B" if preference > TIE else "tie"


Item = tuple[str, str, str]  # instruction, output_1, output_2


def labelled(annotations: Sequence[dict]) -> list[tuple[Item, dict, str]]:
    """(item, annotation, label) of every vote on a real pair that did not fail."""
    votes = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or is_control(annotation):
            continue
        preference = read_preference(annotation.get("preference"), index)
        if preference is None:
            continue
        item = (str(annotation.get("instruction")), str(annotation.get("output_1")), str(annotation.get("output_2")))
        votes.append((item, annotation, label(preference)))
    return votes


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def krippendorff_alpha(counts: np.ndarray) -> float | None:
    """Nominal alpha from an items x labels count table; None when it is undefined (no disagreement possible)."""
    import krippendorff

    if counts.shape[0] == 0 or (counts.sum(axis=1) <= 1).all():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


def alpha_interval(counts: np.ndarray, seed: int = 0, resamples: int = ALPHA_RESAMPLES) -> list[float] | None:
    """95% percentile bootstrap interval of alpha, resampling items; resamples where alpha is undefined are
    dropped."""
    if counts.shape[0] < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [krippendorff_alpha(counts[rng.integers(0, counts.shape[0], counts.shape[0])])
              for _ in range(resamples)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def fleiss(counts: np.ndarray) -> dict:
    """Fleiss' kappa on the items that have the most common number of votes (its formula needs equal numbers)."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    if counts.shape[0] == 0:
        return {"kappa": None, "n_items": 0, "votes_per_item": None}
    per_item = counts.sum(axis=1)
    size = max(Counter(per_item.tolist()).items(), key=lambda item: (item[1], item[0]))[0]
    table = counts[per_item == size]
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = _finite(fleiss_kappa(table))
    return {"kappa": kappa, "n_items": int(table.shape[0]), "votes_per_item": int(size)}


def pairwise_agreement(counts: np.ndarray) -> tuple[float | None, int]:
    """(share of agreeing pairs among all pairs of votes on the same item, number of such pairs)."""
    pairs = float((counts.sum(axis=1) * (counts.sum(axis=1) - 1)).sum()) / 2
    agreeing = float((counts * (counts - 1)).sum()) / 2
    return (agreeing / pairs if pairs else None), int(pairs)


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _others_majority(labels: list[tuple[str, str]], annotator: str) -> str | None:
    counts = Counter(lab for who, lab in labels if who != annotator).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def annotator_rows(votes: list[tuple[Item, dict, str]]) -> dict[str, dict]:
    """Per annotator: votes, agreement with the others' majority, tie share and first-shown share."""
    by_item: dict[Item, list[tuple[str, str]]] = defaultdict(list)
    for item, annotation, lab in votes:
        by_item[item].append((str(annotation.get("annotator") or "(unnamed)"), lab))
    rows: dict[str, dict] = {}
    for item, annotation, lab in votes:
        name = str(annotation.get("annotator") or "(unnamed)")
        row = rows.setdefault(name, {"votes": 0, "ties": 0, "decisive": 0, "first": 0, "shown": 0, "shared": 0,
                                     "agreed": 0})
        row["votes"] += 1
        row["ties"] += lab == "tie"
        first = annotation.get("shown_first")
        if lab != "tie" and first in (1, 2):
            row["decisive"] += 1
            row["first"] += (lab == "A") == (first == 1)
        majority = _others_majority(by_item[item], name)
        if majority is not None:
            row["shared"] += 1
            row["agreed"] += lab == majority
    return {name: {"votes": r["votes"], "agreement_with_others": _share(r["agreed"], r["shared"]),
                   "shared_items": r["shared"], "tie_rate": _share(r["ties"], r["votes"]),
                   "first_position_rate": _share(r["first"], r["decisive"]), "decisive_with_side": r["decisive"]}
            for name, r in sorted(rows.items())}


def label_counts(votes: list[tuple[Item, dict, str]]) -> np.ndarray:
    """Items x (A, B, tie) vote counts, for the items with at least two votes."""
    by_item: dict[Item, Counter] = defaultdict(Counter)
    for item, _, lab in votes:
        by_item[item][lab] += 1
    rows = [[c[lab] for lab in LABELS] for c in by_item.values() if sum(c.values()) >= 2]
    return np.array(rows, dtype=float).reshape(-1, len(LABELS))


def annotator_agreement(annotations: Sequence[dict], seed: int = 0) -> dict | None:
    """Every measure above, JSON-ready; None without votes. Without an item of two votes `n_items` is 0 and only
    the per-annotator rows say something (ties, first-shown share)."""
    votes = labelled(annotations)
    if not votes:
        return None
    counts = label_counts(votes)
    pairwise, pairs = pairwise_agreement(counts)
    return {"n_items": int(counts.shape[0]), "votes": int(counts.sum()),
            "annotators": len({str(a.get("annotator")) for _, a, _ in votes}),
            "alpha": krippendorff_alpha(counts), "alpha_ci": alpha_interval(counts, seed),
            "fleiss": fleiss(counts), "pairwise_agreement": pairwise, "pairs": pairs,
            "by_annotator": annotator_rows(votes)}


# ------------------------------------------------------------------------------------------ two sets of judgments


def compare(first: Sequence[dict], second: Sequence[dict], first_name: str = "first",
            second_name: str = "second") -> dict:
    """Agreement of two sets of judgments on the pairs both judged; UserError when they judged different pairs."""
    from statsmodels.stats.inter_rater import cohens_kappa

    theirs: dict[str, list[tuple[Item, str]]] = defaultdict(list)
    for item, _, lab in labelled(second):
        theirs[item[0]].append((item, lab))
    flip = {"A": "B", "B": "A", "tie": "tie"}
    table = np.zeros((3, 3))
    instructions = set()
    for (instruction, out_1, out_2), _, lab in labelled(first):
        for (_, other_1, other_2), other in theirs.get(instruction, ()):
            if (other_1, other_2) == (out_2, out_1) and out_1 != out_2:
                other = flip[other]  # the same pair with the sides the other way round
            elif (other_1, other_2) != (out_1, out_2):
                raise UserError(f"{first_name} and {second_name} judged different answers to the same instruction "
                                f"{instruction[:60]!r}: they come from different output files")
            table[LABELS.index(lab), LABELS.index(other)] += 1
            instructions.add(instruction)
    n = int(table.sum())
    if not n:
        raise UserError(f"{first_name} and {second_name} share no judged pair: they judge different output files")
    decisive = table[:2, :2].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = _finite(cohens_kappa(table, return_results=False))
    return {"pairs": n, "instructions": len(instructions), "agreement": float(np.trace(table)) / n,
            "decisive": int(decisive), "decisive_agreement": float(table[0, 0] + table[1, 1]) / decisive
            if decisive else None,
            "cohen_kappa": kappa, "labels": list(LABELS), "confusion": table.astype(int).tolist()}
