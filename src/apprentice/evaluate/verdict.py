"""Read a judge's answer: `parse_verdict(text)` and `verdict_from_logprobs(top_logprobs)` -> "A" | "B" | "tie" | None,
and `second_probability(top_logprobs)` -> P(B) / (P(A) + P(B)), the judge's soft preference for the output it was
shown second.

Judges answer in many shapes ("B", "Output (a)", "[[A]]", "**Answer:** B", "Both are equally good", "Response B is
better because ..."). The parser looks for evidence in order of how deliberate it is and stops at the first kind
that names exactly one verdict: a bare label on the first line, `[[X]]` brackets, a labelled answer ("verdict: A"),
a comparison ("A is better", "B is worse"), then tie phrases. Two different verdicts of the same kind mean the
answer is ambiguous, and ambiguity is None (the caller retries or counts a failed judgment), never a guess.

    >>> parse_verdict("After comparing both, the answer is: Output (b).")
    'B'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

Verdict = Literal["A", "B", "tie"]

_NOUN = r"(?:output|response|answer|assistant|model|option|candidate|text|completion)"
# A label the judge clearly uses as a name: "output (a)", "response b", "(a)", "[b]"; or, where the context
# already says a verdict follows, a bare letter.
_NAMED = rf"(?:{_NOUN}\s*[\(\[]?\s*[ab]\s*[\)\]]?|[\(\[]\s*[ab]\s*[\)\]])(?![\w'])"
_LABEL = rf"(?P<label>{_NAMED}|(?<![\w'])[ab](?![\w']))"
_TIE_WORD = r"(?:tie|tied|draw|equal|equally good|both|neither|none|c)"

_FIRST_LINE = re.compile(rf"^\s*(?:{_LABEL}|(?P<tie>{_TIE_WORD}))\s*[.!:;,]?\s*$")
# "B. Response B answers the question..." opens with the verdict; "Output (a): ..." opens a description instead,
# so only a bare letter or tie word followed by a full stop counts.
_OPENING = re.compile(r"^\s*(?:(?P<label>[ab])|(?P<tie>tie))\s*[.!]\s")
_BRACKETS = re.compile(r"\[\[\s*(?P<x>[a-z]+)\s*\]\]")
_ANSWER_KEY = (r"(?:final answer|final verdict|answer|verdict|winner|choice|decision|preference|my pick|"
               r"(?:better|best|preferred|winning|stronger|superior) (?:one|output|response|answer))")
_FILLER = r"(?:(?:clearly|probably|that|indeed|definitely|actually|obviously|certainly)\s+)*"
_LABELLED = re.compile(
    rf"\b{_ANSWER_KEY}\s*(?:(?:is|would be)\s*[:=]?|[:=]|->|-|\n)\s*{_FILLER}"
    rf"(?:{_LABEL}|(?P<tie>a tie|tie|draw|neither|both)\b)"
)
_INTENSIFIER = r"(?:(?:clearly|slightly|much|far|significantly|somewhat|a bit|overall|definitely|the|a)\s+)*"
_WORSE = r"worse|inferior|weaker|less (?:helpful|accurate|relevant|complete)"
_COMPARISONS = (
    re.compile(
        rf"{_LABEL}\s+(?:is|was|seems|appears|looks|does|reads)\s+{_INTENSIFIER}"
        rf"(?P<dir>better|superior|preferable|preferred|stronger|"
        rf"more (?:helpful|accurate|relevant|complete)|{_WORSE})\b"
    ),
    re.compile(rf"{_LABEL}\s+(?:wins|is the winner)\b"),
    re.compile(rf"\bi (?:would )?(?:prefer|choose|pick|select)\s+(?P<label>{_NAMED})"),
)
_TIE = re.compile(
    r"\b(?:it'?s a tie|a tie|tie|tied|it'?s a draw|equally (?:good|bad|helpful|valid|strong|well|accurate|poor)|"
    r"(?:both|the two) (?:\w+ ){0,2}(?:are|were) (?:\w+ )?(?:equally|equal|similar|the same|just as good|comparable)|"
    r"neither (?:\w+ ){0,2}is (?:clearly )?(?:better|worse|preferable)|no (?:clear )?(?:winner|difference)|"
    r"(?:equal|same|similar) quality)\b"
)


# The menu of answers, as the prompt words it: a judge that echoes it ("Your reply (A, B or tie)") names no verdict.
_MENU = re.compile(r"\(?\ba\s*,\s*b\s*,?\s*(?:or|and)\s+(?:a\s+)?tie\b\)?")


def _clean(text: str) -> str:
    """Lowercase, drop markdown emphasis and quotes, which judges sprinkle around their verdicts, and any echo of
    the answer menu."""
    text = re.sub(r"[*_`#\"“”]", "", text.lower())
    return _MENU.sub(" ", re.sub(r"[ \t]+", " ", text))


def _read(match: re.Match) -> Verdict | None:
    """The verdict a match names: its label's letter (flipped when it says "worse"), or a tie word."""
    groups = match.groupdict()
    if groups.get("label"):
        letter = re.search(r"([ab])[\s\)\]]*$", groups["label"]).group(1)
        verdict: Verdict = "A" if letter == "a" else "B"
        if re.fullmatch(_WORSE, groups.get("dir") or ""):
            verdict = "B" if verdict == "A" else "A"
        return verdict
    return "tie" if groups.get("tie") else None


def _unique(verdicts: list[Verdict | None]) -> tuple[bool, Verdict | None]:
    """(found, verdict): found when this kind of evidence appears; the verdict is None if it disagrees with itself."""
    found = {v for v in verdicts if v is not None}
    if not found:
        return False, None
    return True, found.pop() if len(found) == 1 else None


def parse_verdict(text: str) -> Verdict | None:
    """The judge's verdict in `text` (A = the output shown first, B = second), or None if absent or ambiguous."""
    cleaned = _clean(text).strip()
    if not cleaned:
        return None
    first_line = cleaned.splitlines()[0]
    match = _FIRST_LINE.match(first_line) or _OPENING.match(cleaned)
    if match:
        return _read(match)
    brackets = [{"a": "A", "b": "B", "c": "tie", "tie": "tie"}.get(m.group("x")) for m in _BRACKETS.finditer(cleaned)]
    if brackets:
        return _unique(brackets)[1] if None not in brackets else None
    for patterns in ((_LABELLED,), _COMPARISONS):
        found, verdict = _unique([_read(m) for pattern in patterns for m in pattern.finditer(cleaned)])
        if found:
            return verdict
    return "tie" if _TIE.search(cleaned) else None


def label_mass(top_logprobs: Mapping[str, float] | None) -> dict[Verdict, float]:
    """The probability the first generated token's top log-probabilities put on each label.

    Tokens are read as labels after stripping spaces, tokenizer markers and brackets (" A", "▁B", "(a", "Tie"), so
    the spellings of one label add up."""
    mass: dict[Verdict, float] = {"A": 0.0, "B": 0.0, "tie": 0.0}
    for token, logprob in (top_logprobs or {}).items():
        word = token.replace("▁", " ").replace("Ġ", " ").strip().strip("[](){}*\"'.:,").lower()
        verdict = {"a": "A", "b": "B", "tie": "tie"}.get(word)
        if verdict is not None:
            mass[verdict] += math.exp(logprob)
    return mass


def verdict_from_logprobs(top_logprobs: Mapping[str, float] | None, min_mass: float = 0.5) -> Verdict | None:
    """The verdict the first generated token's log-probabilities point to, when they point clearly.

    Returns None unless the labels (read as `label_mass` reads them) together hold at least `min_mass` of the
    probability (a first token such as "The" means the verdict comes later in the text) and one label is strictly
    the most probable."""
    mass = label_mass(top_logprobs)
    ranked = sorted(mass.items(), key=lambda item: item[1], reverse=True)
    if sum(mass.values()) < min_mass or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def second_probability(top_logprobs: Mapping[str, float] | None) -> float | None:
    """P(B) / (P(A) + P(B)) over the first token's labels: how likely the judge is to pick the output it was shown
    second, ties left aside. None when neither A nor B is among the top tokens, since nothing was measured then."""
    mass = label_mass(top_logprobs)
    total = mass["A"] + mass["B"]
    return mass["B"] / total if total > 0 else None
