"""Filters for machine-generated instruction data: pure functions that return a short, stable reason code or None.

`check_instruction` applies Stanford Alpaca's rules to a new instruction (length, blacklisted words, "Write a
program", a leading punctuation mark or non-ASCII character). `check_example` applies quality rules to a whole record,
aimed at the known defects of machine data (AlpacaDataCleaned's list, plus the repetition loops of small teachers):
empty or "N/A" outputs, leaked list markers, references to links or attachments the model cannot see, requests for
images or files, repetition loops, and outputs that only echo the input. Near duplicates are `rouge.py`'s business.

The reason codes are keys of stats.json and values in rejected.jsonl, so they never change:

    too_short  too_long  blacklisted_word  write_a_program  starts_with_punctuation  starts_non_ascii
    empty_output  na_output  leaked_marker  references_url_or_attachment  asks_for_media  repetition_loop
    echoes_input

Usage: `reason = check_instruction(text, FilterConfig()) or check_example(text, input, output, FilterConfig())`.
Tests: `python -m pytest tests/test_filters.py -q`.
"""

from __future__ import annotations

import re
import string
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cache

from apprentice.generate.rouge import rouge_l_f, tokenize
from apprentice.settings import setting

# Alpaca's whole-word blacklist: things a text-only model cannot see or produce.
ALPACA_BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot",
    "go to", "video", "audio", "music", "flowchart", "diagram",
)


@dataclass(frozen=True)
class FilterConfig:
    min_words: int = setting(4, "Drop instructions with fewer words (Alpaca: 4).", min=0)
    max_words: int = setting(150, "Drop instructions with more words (Alpaca: 150).", min=1)
    blacklist: tuple[str, ...] = setting(
        ALPACA_BLACKLIST, "Drop instructions holding one of these whole words or phrases (repeat the option for "
        "each; default: Alpaca's list of things a text-only model cannot see or make).")
    # zlib needs a few hundred characters before its ratio means anything
    loop_min_chars: int = setting(256, "Outputs shorter than this are not checked for repetition loops.",
                                  unit="characters", min=0)
    # human-written outputs in AlpacaEval sit around 0.58 (1st percentile 0.26); a looping small model goes below 0.1
    loop_max_compression: float = setting(
        0.15, "Drop outputs that zlib compresses below this ratio (compressed / raw size): repetition loops.",
        flag="--loop-compression", min=0, max=1)
    # catches a sentence template looped with one word changed; songs with a chorus pass
    loop_ngram: int = setting(6, "Words in the run that --loop-ngram-repeats counts.", min=1)
    loop_ngram_repeats: int = setting(
        10, "Drop outputs repeating one run of --loop-ngram words this often, when they also compress below "
        "--loop-ngram-compression.", min=1)
    loop_ngram_compression: float = setting(0.25, "See --loop-ngram-repeats.", min=0, max=1)
    loop_line_repeats: int = setting(10, "Drop outputs with the same line (of 10+ characters) this often.", min=1)
    loop_unit_repeats: int = setting(
        20, "Drop outputs with a unit of 1-8 characters holding a letter or digit repeated back to back this often "
        "('hahaha...').", min=1)
    # off by default: editing tasks (fix the grammar, fix the code, add emojis) legitimately score near 1; two of the
    # 175 seed tasks score 1.0. Whitespace-normalised equality with the input or instruction always counts as an echo.
    echo_rouge: float | None = setting(
        None, "Drop outputs whose ROUGE-L F with the input is above this (default off: editing tasks echo "
        "legitimately; an output equal to its input is always dropped).", min=0, max=1)


def check_instruction(instruction: str, config: FilterConfig) -> str | None:
    """Stanford Alpaca's rules on a generated instruction; "Write a program" is matched case-insensitively."""
    text = instruction.strip()
    words = len(text.split())
    if words < config.min_words:
        return "too_short"
    if words > config.max_words:
        return "too_long"
    if _blacklist_pattern(config.blacklist).search(text):
        return "blacklisted_word"
    if text.lower().startswith("write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_non_ascii"
    return None


def check_example(instruction: str, input: str, output: str, config: FilterConfig) -> str | None:
    """Quality rules on a whole record (the instruction rules are `check_instruction`'s)."""
    if not output.strip():
        return "empty_output"
    if _placeholder(output) in _NA_OUTPUTS:
        return "na_output"
    if any(_LEAKED_MARKER.search(text) for text in (instruction, input, output)):
        return "leaked_marker"
    if _references_unseen(instruction, input, output):
        return "references_url_or_attachment"
    if _MEDIA_REQUEST.search(instruction) or _MEDIA_REQUEST.search(input) or _FAKE_MEDIA.search(output):
        return "asks_for_media"
    if _loops(output, config) or _loops(input, config):
        return "repetition_loop"
    if _echoes(instruction, input, output, config):
        return "echoes_input"
    return None


def normalize_no_input(text: str) -> str:
    """Map the many "no input" markers of machine data ("<noinput>", "No input.", "N/A", "none", ...) to ""."""
    return "" if _placeholder(text) in _NO_INPUTS else text


def _placeholder(text: str) -> str:
    """A short text reduced to compare with placeholder markers: lowercase, no brackets or trailing full stop."""
    return " ".join(text.strip().strip("<>()[]\"'").rstrip(".").lower().split())


_NO_INPUTS = frozenset({
    "", "noinput", "no input", "no_input", "n/a", "na", "none", "null", "nil", "-", "empty", "blank",
    "no input required", "no input needed", "not applicable", "input: none", "no additional input",
})
_NA_OUTPUTS = frozenset({
    "n/a", "na", "nooutput", "no output", "no_output", "no answer", "null", "not applicable", "noinput",
    "no input", "...", "-", "empty", "blank", "tbd", "todo", "insert output here", "your answer here",
})

# A list marker or prompt-template header at the start of a line: the model ran on into the next task or echoed
# the prompt's format ("2. Instruction:", "Input:", "### Response").
_LEAKED_MARKER = re.compile(
    r"^[ \t]*(?:\d+[ \t]*[.)][ \t]*)?(?:instruction|input|output)[ \t]*:"
    r"|^[ \t]*#{2,}[ \t]*(?:instruction|input|response)\b",
    re.IGNORECASE | re.MULTILINE,
)

_ATTACHMENT = re.compile(
    r"\b(?:see|check|open|view|refer to|find)\s+(?:the\s+)?(?:attached|attachment|enclosed)\b"
    r"|\battached\s+(?:file|document|image|picture|photo|pdf|spreadsheet|chart|graph|table|screenshot|audio|video)s?\b"
    r"|\b(?:link|url)s?\s+(?:below|above|provided)\b"
    r"|\b(?:click|follow|open|visit)\s+(?:on\s+)?(?:the|this)\s+link\b"
    # Not "the following document/article/table/graph": the text usually follows in the input.
    r"|\bthe\s+following\s+(?:link|url|image|picture|photo|chart|video|audio|pdf|spreadsheet|screenshot|diagram"
    r"|website|web\s?page|podcast)s?\b",
    re.IGNORECASE,
)
# A verb of reading shortly before a URL, or an input that is only a URL for such an instruction: the answer depends
# on what is behind the link, which the model cannot read (a URL given as data, to convert, parse or cite, is fine).
_READ_VERB = (
    r"\b(?:summar\w*|read|visit|watch|listen to|check out|go through|review|analy[sz]e|according to|based on)\b"
)
_READS_URL = re.compile(_READ_VERB + r"[^.?!\n]{0,60}?(?:https?://|www\.)", re.IGNORECASE)
_READS = re.compile(_READ_VERB, re.IGNORECASE)
_ONLY_URL = re.compile(r"\s*(?:https?://|www\.)\S+\s*", re.IGNORECASE)
_ADMITS_NO_ACCESS = re.compile(
    r"\b(?:can ?not|can't|unable to|don't have|do not have|not able to)\s+(?:access|browse|open|read|view|visit)\b",
    re.IGNORECASE,
)


def _references_unseen(instruction: str, input: str, output: str) -> bool:
    if any(_ATTACHMENT.search(text) for text in (instruction, input, output)):
        return True
    reads_url = _READS_URL.search(instruction) or _READS_URL.search(input) or (
        _ONLY_URL.fullmatch(input) and _READS.search(instruction)
    )
    return bool(reads_url) and not _ADMITS_NO_ACCESS.search(output)


_MEDIA_NOUNS = (
    r"image|picture|photo|photograph|illustration|painting|drawing|logo|icon|meme|gif|video|audio|recording|podcast"
    r"|animation|slideshow|slides|powerpoint|spreadsheet|pdf|chart|graph|diagram|flowchart|infographic|map|file"
    r"|screenshot"
)
# A request, at the start of a sentence, to make media: "Draw a picture of...", "Can you create a logo for...".
_MEDIA_REQUEST = re.compile(
    rf"(?:^|[.!?:]\s+|\n\s*)(?:please\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?)?"
    rf"(?:draw|paint|design|create|generate|make|produce|render|record|film|upload|attach|send|take|sketch"
    rf"|illustrate)\b(?:\s+\S+){{0,4}}?\s+(?<!table )(?:{_MEDIA_NOUNS})s?\b",
    re.IGNORECASE,
)
# An output that pretends to deliver media: a markdown image, an "[image]" placeholder (HTML <img> is code, fine).
_FAKE_MEDIA = re.compile(rf"!\[[^\]]*\]\(|\[(?:{_MEDIA_NOUNS})s?(?:\s[^\]]*)?\]", re.IGNORECASE)


def _loops(text: str, config: FilterConfig) -> bool:
    units = _unit_run_pattern(config.loop_unit_repeats)
    if any(any(ch.isalnum() for ch in run.group(1)) for run in units.finditer(text)):
        return True
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 10)
    if lines and max(lines.values()) >= config.loop_line_repeats:
        return True
    if len(text) < config.loop_min_chars:
        return False
    raw = text.encode()
    compression = len(zlib.compress(raw, 9)) / len(raw)
    if compression < config.loop_max_compression:
        return True
    if compression < config.loop_ngram_compression:
        words = text.lower().split()
        n = config.loop_ngram
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        return bool(grams) and max(grams.values()) >= config.loop_ngram_repeats
    return False


def _echoes(instruction: str, input: str, output: str, config: FilterConfig) -> bool:
    said = _squash(output)
    if said == _squash(instruction) or (input.strip() and said == _squash(input)):
        return True
    if config.echo_rouge is not None and input.strip():
        return rouge_l_f(tokenize(output), tokenize(input)) > config.echo_rouge
    return False


def _squash(text: str) -> str:
    """Whitespace-normalised, without surrounding quotes: what "the same text" means for an echo."""
    return " ".join(text.split()).strip("\"'")


@cache
def _unit_run_pattern(repeats: int) -> re.Pattern:
    return re.compile(rf"(?s)(.{{1,8}}?)\1{{{repeats - 1},}}")


@cache
def _blacklist_pattern(words: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(word) for word in words) or r"(?!)"
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)
