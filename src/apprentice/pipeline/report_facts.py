"""What the report says, computed from records already read: pure functions, no files, no plots.

    from apprentice.pipeline.report_facts import root_verb, reading, pick_examples
    root_verb("Given a list of numbers, sort them.")     # "sort"
    reading({"n": 90, "win_rate_ci": [0.43, 0.58]})      # ("on par", "...")

Statistics of the comparison come from `apprentice.evaluate.stats.summarize`; this module only words them.

Root verbs: Self-Instruct plots the verb at the root of each instruction's parse tree. No parser is available offline,
so this is a heuristic for imperative instructions: drop a leading "please" or "can/could/would you", skip a leading
"Given ...,"-style clause up to its first comma, then take the first word, lowercased, when it is a verb: listed in
`VERBS` (common instruction verbs) or ending in -ize, -yze or -ify. Anything else (questions, "The following ...")
has no root verb here and is counted apart.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from apprentice.evaluate.fidelity import words as word_count  # one way to count an answer's words
from apprentice.evaluate.stats import TIE, read_preference

VERBS = frozenset("""
    act add adapt adjust advise alter analyse analyze annotate answer apologize append approximate argue arrange
    assess assign assume balance begin book brainstorm build calculate call capitalize categorise categorize change
    check choose cite clarify classify clean close collect combine come comment compare compile complete compose
    compute conclude configure congratulate conjugate connect consider construct continue contrast convert convince
    correct count create critique debug decide decode define delete demonstrate derive describe design detect
    determine develop devise differentiate discuss distinguish divide document draft draw edit elaborate email encode
    encourage enhance estimate evaluate examine execute expand explain explore express extend extract fill filter
    find finish fix format formulate gather generate give greet group guess help highlight identify illustrate
    imagine implement improve infer insert interpret introduce invent invite judge label link list locate look make
    mark match measure memorize mention merge modify multiply name narrate note offer open optimize order organise
    organize outline paraphrase parse pick plan play point polish predict prepare present pretend print prioritise
    prioritize produce pronounce proofread propose prove provide punctuate rank rate read recall recite recommend
    recount refactor relate remind remove rename render reorder rephrase replace reply report respond restate
    retell return reverse review revise rewrite reword round run say schedule score search select send separate
    set share shorten show simplify solve sort specify spell split start state subtract suggest sum summarise
    summarize swap take teach tell test think tighten transform translate turn tweak underline update use validate
    verify visualize warn welcome write
""".split())
_VERB_SUFFIX = re.compile(r"(?:ize|yze|ify)$")
_POLITE = re.compile(r"^(?:please\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?)", re.IGNORECASE)
# a leading clause such as "Given a list of numbers," or "Using the passage below," names the material, not the task
_CLAUSE = re.compile(r"^(?:given|using|based on|for|in|from|with|after|considering|assuming|if|when|as)\b[^,.?!]*,\s*",
                     re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z]+")

ON_PAR_HALF_WIDTH = 0.10  # "on par": the whole 95% interval lies within 50% ± this...
ON_PAR_MIN_JUDGED = 20  # ... over at least this many judgments: a few ties give a zero-width bootstrap interval
LOW_SWAP_AGREEMENT = 0.5  # below this the judge's verdicts mostly follow the order the outputs were shown in
POSITION_ONLY = 0.9  # a probability judge that gives one position this much on average reads position, not answers


def root_verb(instruction: str) -> str | None:
    """The verb an instruction starts with, by the heuristic in the module docstring; None when there is none."""
    text = _POLITE.sub("", instruction.strip())
    text = _POLITE.sub("", _CLAUSE.sub("", text, count=1))
    match = _FIRST_WORD.match(text)
    if not match:
        return None
    word = match.group().lower()
    return word if word in VERBS or (len(word) > 4 and _VERB_SUFFIX.search(word)) else None


def verb_counts(instructions: Sequence[str], top: int = 15) -> tuple[list[tuple[str, int]], int]:
    """(the `top` root verbs with their counts, most frequent first; how many instructions have a root verb)."""
    verbs = Counter(v for v in map(root_verb, instructions) if v)
    return sorted(verbs.items(), key=lambda item: (-item[1], item[0]))[:top], sum(verbs.values())


def describe_lengths(texts: Sequence[str]) -> dict[str, Any]:
    """Count, mean, median and maximum length in words, and how many texts are blank."""
    words = [word_count(t) for t in texts]
    if not words:
        return {"n": 0, "mean": None, "median": None, "max": None, "empty": 0}
    return {"n": len(words), "mean": statistics.fmean(words), "median": statistics.median(words), "max": max(words),
            "empty": sum(not t.strip() for t in texts)}


def sample(records: Sequence[Any], k: int, seed: int = 0) -> list[Any]:
    """`k` records drawn with a fixed seed, in file order, so the same run always shows the same sample."""
    if len(records) <= k:
        return list(records)
    return [records[i] for i in sorted(random.Random(seed).sample(range(len(records)), k))]


def reading(summary: dict[str, Any]) -> tuple[str, str]:
    """(a one- or few-word verdict, a sentence) for the student's win rate against the teacher, decided by the 95%
    interval of the win rate and never by the point estimate alone; with a warning when the judge mostly
    contradicted itself across the two orders."""
    ci, n = summary.get("win_rate_ci"), summary.get("n", 0)
    if not ci:
        word, sentence = "too few judgments", f"{n} judged comparison(s) give no interval to read."
    else:
        low, high = ci
        span = f"{100 * low:.1f}% to {100 * high:.1f}%"
        if low > 0.5:
            word, sentence = "better", f"The student beats the teacher: the whole 95% interval ({span}) is above 50%."
        elif high < 0.5:
            word, sentence = "worse", f"The student loses to the teacher: the whole 95% interval ({span}) is below 50%."
        elif n < ON_PAR_MIN_JUDGED:
            word, sentence = "no detectable difference", (
                f"The 95% interval ({span}) contains 50%, but {n} judgments are too few to call the two on par: "
                f"judge at least {ON_PAR_MIN_JUDGED} prompts.")
        elif 0.5 - ON_PAR_HALF_WIDTH <= low and high <= 0.5 + ON_PAR_HALF_WIDTH:
            word, sentence = "on par", (f"No detectable difference, and the 95% interval ({span}) rules out a gap of "
                                        f"more than {100 * ON_PAR_HALF_WIDTH:.0f} points either way.")
        else:
            word, sentence = "no detectable difference", (
                f"The 95% interval ({span}) contains 50%, but it is too wide to call the two on par: judge more "
                f"prompts to narrow it.")
    agreement = summary.get("swap_agreement")
    lean = summary.get("first_position_prob")
    if lean is not None and abs(lean - 0.5) >= POSITION_ONLY - 0.5:
        sentence += (f" Caution: the judge gave the answer shown {'first' if lean > 0.5 else 'second'} "
                     f"{100 * max(lean, 1 - lean):.0f}% of its probability on average, whichever it was: its "
                     f"verdicts follow the order, not the answers (averaging both orders cancels the lean, so it "
                     f"adds no spurious win, but no information either). The judge-free measures of how close the "
                     f"clone is say more.")
    elif agreement is not None and agreement < LOW_SWAP_AGREEMENT:
        sentence += (f" Caution: the judge gave the same verdict in both orders for only {100 * agreement:.0f}% of "
                     f"the pairs, so its ties mostly reflect which answer it was shown first.")
    return word, sentence


def control_caution(controls: dict[str, Any]) -> str:
    """A sentence for a judge (or a crowd) whose accuracy on control pairs fell below the threshold."""
    return (f"Caution: on {controls['n']} control pairs, a real answer against a deliberately wrong one, the "
            f"verdicts picked the real answer only {100 * controls['accuracy']:.0f}% of the time (ties half; 50% is "
            f"chance, {100 * controls['threshold']:.0f}% the threshold), so they say little about which answer is "
            f"better.")


def verdict(annotation: dict[str, Any], index: int) -> tuple[str, str]:
    """(a CSS class, the verdict in words) of one annotation whose output_1 is the student's."""
    preference = read_preference(annotation.get("preference"), index)
    if preference is None:
        return "failed", "no verdict (the judgment failed)"
    if preference == TIE:
        split = annotation.get("swap_agreement") is False and annotation.get("preference_from") != "logprobs"
        return "tie", "tie (the two orders disagreed)" if split else "tie"
    # a fractional preference (the judge's probabilities, averaged over both orders) leans one way by its distance
    # from 1.5; output_1 is the student's
    css, words = ("win", "student better") if preference < TIE else ("loss", "teacher better")
    if preference not in (1.0, 2.0):
        words += f" (P = {abs(preference - TIE) + 0.5:.2f})"
    return css, words


def pick_examples(annotations: Sequence[dict[str, Any]], k: int = 8) -> list[int]:
    """Indexes of `k` annotations to show side by side: taken in turn from each kind of verdict (student better,
    teacher better, tie, failed), earliest first, so that every kind appears when the file has it; in file order."""
    by_kind: dict[str, list[int]] = {}
    for index, annotation in enumerate(annotations):
        by_kind.setdefault(verdict(annotation, index)[0], []).append(index)
    queues = [by_kind[kind] for kind in ("win", "loss", "tie", "failed") if kind in by_kind]
    chosen: list[int] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def clip(text: str, limit: int = 4000) -> str:
    """`text` cut to `limit` characters with a note of how much was left out (base models can ramble for pages)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters)"


def training_summary(metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Steps, first and last loss, tokens and the overall tokens/s (all tokens over all step time) of a training
    log; steps are taken as logged, so a resumed run's log (trimmed at its checkpoint) reads as one run."""
    if not metrics:
        return {"steps": 0}
    tokens = sum(m.get("tokens", 0) for m in metrics)
    seconds = sum(m.get("seconds", 0.0) for m in metrics)
    return {"steps": metrics[-1].get("step", len(metrics)), "first_loss": metrics[0].get("loss"),
            "last_loss": metrics[-1].get("loss"), "min_loss": min(m["loss"] for m in metrics),
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "epochs": metrics[-1].get("epoch")}


# ---- how close is the clone: base -> student -> teacher on each fidelity measure -----------------------------------

# (key in the behaviour measures, label, how to show it); the teacher's own value is the target of each
CLONE_MEASURES = (
    ("stop_rate", "answers that end before the token limit", "pct"),
    ("length_ratio", "median length / the teacher's answer", "ratio"),
    ("median_words", "median length (words)", "words"),
    ("rouge_l", "ROUGE-L F to the teacher's answer", "ratio"),
    ("distinct_2", "distinct 2-grams (low: repetition)", "ratio"),
    ("markdown", "answers with lists or markdown", "pct"),
)


def gap_closed(base: float | None, student: float | None, teacher: float | None) -> float | None:
    """The share of the base model's distance to the teacher that the student closed: 1 - |student - teacher| /
    |base - teacher|. 1 = at the teacher, 0 = as far as the base was, negative = further away than the base, on
    either side (a student that overshoots the teacher is as far from it as one that falls short); None when a
    value is missing or base and teacher already agree."""
    if base is None or student is None or teacher is None or math.isclose(base, teacher, abs_tol=1e-9):
        return None
    return 1 - abs(student - teacher) / abs(base - teacher)


def clone_rows(fidelity: dict[str, Any]) -> dict[str, Any]:
    """The report's "how close is the clone" facts from RUN/fidelity.json: per measure the base, student and
    teacher values and the gap the student closed, and the NLL of the teacher's answers under base and student."""
    nll = {m.get("role"): m for m in fidelity.get("models") or [] if isinstance(m, dict)}
    answers = {a.get("role"): a for a in fidelity.get("answers") or [] if isinstance(a, dict)}
    rows = []
    for key, label, kind in CLONE_MEASURES:
        base = (answers.get("base") or {}).get("measures", {}).get(key)
        student = (answers.get("student") or {}).get("measures", {}).get(key)
        source = answers.get("student") or answers.get("base") or {}
        teacher = source.get("teacher", {}).get(key)
        if key == "rouge_l" and teacher is not None:
            teacher = 1.0  # the teacher's answer against itself
        if base is None and student is None:
            continue
        rows.append({"key": key, "label": label, "kind": kind, "base": base, "student": student, "teacher": teacher,
                     "closed": gap_closed(base, student, teacher)})
    base_nll = (nll.get("base") or {}).get("nll")
    student_nll = (nll.get("student") or {}).get("nll")
    drop = 1 - student_nll / base_nll if base_nll and student_nll is not None else None
    prompts = {who: a.get("prompts") for who, a in answers.items()}
    return {"rows": rows, "base_nll": base_nll, "student_nll": student_nll, "nll_drop": drop,
            "nll_prompts": (nll.get("student") or nll.get("base") or {}).get("prompts"),
            "nll_tokens": (nll.get("student") or nll.get("base") or {}).get("tokens"), "prompts": prompts}
