"""Control pairs: a real answer against a deliberately wrong one made from the same data, mixed into the pairs people
and judges vote on, so that a voter who cannot tell a right answer from a wrong one shows as such.

    from apprentice.evaluate.controls import make_controls, control_summary
    controls = make_controls(pairs, 10, random.Random(0))   # pairs from outputs.join_outputs
    control_summary(annotations)                            # accuracy overall and per annotator, or None

The wrong answer is one of two kinds, both made from the same model's own answers so that style gives nothing away:
- "other-answer": that model's answer to a different instruction of the set;
- "first-sentence": the real answer cut to its first sentence (only when that is at most half of it).
The real answer sits on side A in half of the controls and on side B in the other half (shuffled); people then see
the sides drawn at random like every other item, and a judge sees them in its usual order(s).

In annotations a control carries `control` (its kind; absent or null on a real pair) and `control_correct`, the
preference a right vote gives (1 when output_1 is the real answer, 2 when output_2 is). Its score is the win rate of
the real answer: 1 right, 0 wrong, 0.5 a tie, a fraction for a soft preference, so 50% is what a coin (or a judge
that always names the first-shown answer, in both orders) gets. Controls never enter the win rate
(`stats.summarize` leaves them out).
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from apprentice.errors import UserError
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.stats import is_control, read_preference

KINDS = ("other-answer", "first-sentence")
# below this share of controls answered right, an annotator's (or a judge's) verdicts are flagged as doubtful: the
# wrong answers are meant to be obvious to anyone reading, so a careful voter is near 100%, a coin at 50%
CONTROL_THRESHOLD = 0.8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclass(frozen=True)
class Control:
    pair: Pair  # output_a and output_b as shown: the real answer on the `correct` side
    correct: str  # "A" or "B"
    kind: str  # one of KINDS


def first_sentence(text: str) -> str | None:
    """The first sentence of `text` when it is at most half of it; None otherwise (the cut would not be clearly
    worse than the whole)."""
    text = text.strip()
    parts = _SENTENCE_END.split(text, maxsplit=1)
    if len(parts) < 2 or len(parts[0]) > len(text) / 2:
        return None
    return parts[0]


def _answer(pair: Pair, side: str) -> str:
    return pair.output_a if side == "A" else pair.output_b


def _wrong_answers(pairs: Sequence[Pair], index: int, side: str) -> dict[str, list[str]]:
    """The wrong answers each kind can make for the real answer of `pairs[index]` on `side` ("A" or "B")."""
    real = _answer(pairs[index], side).strip()
    others = [_answer(p, side) for i, p in enumerate(pairs) if i != index and _answer(p, side).strip() != real]
    cut = first_sentence(real)
    return {kind: options for kind, options in (("other-answer", others), ("first-sentence", [cut] if cut else []))
            if options}


def _sides(pairs: Sequence[Pair], index: int, distinct: dict[str, int]) -> list[str]:
    """The sides whose answer in `pairs[index]` can be a control's real answer; `distinct` counts the different
    answers on each side (with two or more, every answer has another instruction's to stand against it)."""
    return [side for side in ("A", "B")
            if distinct[side] > 1 or first_sentence(_answer(pairs[index], side)) is not None]


def control_pool(pairs: Sequence[Pair]) -> list[int]:
    """Indexes of the pairs a control can be made from (one control per instruction at most)."""
    distinct = {side: len({_answer(p, side).strip() for p in pairs}) for side in ("A", "B")}
    return [i for i in range(len(pairs)) if _sides(pairs, i, distinct)]


def make_controls(pairs: Sequence[Pair], n: int, rng: random.Random) -> list[Control]:
    """`n` controls from `n` different instructions of `pairs`, drawn with `rng`; UserError when fewer can be made."""
    if n <= 0:
        return []
    pool = control_pool(pairs)
    if n > len(pool):
        raise UserError(f"--controls {n} is more than the {len(pool)} control pairs these {len(pairs)} instructions "
                        f"can give (one per instruction; a control needs another instruction's answer or an answer "
                        f"of two sentences or more)")
    slots = (["A", "B"] * math.ceil(n / 2))[:n]
    rng.shuffle(slots)
    distinct = {side: len({_answer(p, side).strip() for p in pairs}) for side in ("A", "B")}
    controls = []
    for index, slot in zip(rng.sample(pool, n), slots, strict=True):
        source = pairs[index]
        side = rng.choice(_sides(pairs, index, distinct))
        options = _wrong_answers(pairs, index, side)
        kind = rng.choice(sorted(options))
        wrong = rng.choice(options[kind])
        real, generator = (source.output_a, source.generator_a) if side == "A" else (source.output_b,
                                                                                     source.generator_b)
        output_a, output_b = (real, wrong) if slot == "A" else (wrong, real)
        # both texts are the same model's words, so the generator names are that model's on both sides
        controls.append(Control(Pair(source.instruction, output_a, output_b, generator, generator, source.dataset),
                                slot, kind))
    return controls


def control_score(annotation: dict, index: int) -> float | None:
    """The real answer's score in one control annotation (1 right, 0 wrong, 0.5 tie); None for a failed one."""
    correct = annotation.get("control_correct")
    if correct not in (1, 2) or isinstance(correct, bool):
        raise UserError(f"item {index}: a control (it has 'control') needs 'control_correct' 1 or 2, "
                        f"found {correct!r}")
    preference = read_preference(annotation.get("preference"), index)
    if preference is None:
        return None
    return preference - 1.0 if correct == 2 else 2.0 - preference


def _accuracy(scores: Sequence[float]) -> dict:
    accuracy = math.fsum(scores) / len(scores) if scores else None
    return {"n": len(scores), "accuracy": accuracy,
            "flagged": accuracy is not None and accuracy < CONTROL_THRESHOLD}


def control_summary(annotations: Sequence[dict]) -> dict | None:
    """Accuracy on the controls overall and per annotator (the `annotator` field), with who falls below
    CONTROL_THRESHOLD; None when there are no controls. Failed judgments are counted apart."""
    scores: dict[str, list[float]] = defaultdict(list)
    failed = 0
    for index, annotation in enumerate(annotations):
        if not is_control(annotation):
            continue
        score = control_score(annotation, index)
        if score is None:
            failed += 1
            continue
        scores[str(annotation.get("annotator") or "(unnamed)")].append(score)
    if not scores and not failed:
        return None
    return {**_accuracy([s for values in scores.values() for s in values]), "failed": failed,
            "threshold": CONTROL_THRESHOLD,
            "by_annotator": {name: _accuracy(values) for name, values in sorted(scores.items())}}
