"""Parsers for teacher responses: pure functions from text to tasks, never raising on bad text.

Anything that cannot be used comes back as a `Failure` with a stable reason code, so the loop records it in
`rejected.jsonl` and goes on:

* `unparseable`: the text does not have the expected shape;
* `truncated`: the response hit the length limit and this item is the one it cut off;
* `over_limit`: more items than one prompt may yield.

    parse_alpaca_tasks(text, first_number=4, finish_reason="stop")   # Alpaca's numbered list of tasks
    parse_instruction_list(text, first_number=9, finish_reason="stop", continued=False)  # self-instruct step 1
    parse_instance(text, classification=False, finish_reason="stop", continued=False)    # self-instruct step 2

Run the tests with `python -m pytest tests/test_generate_parse.py -q`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNPARSEABLE = "unparseable"
TRUNCATED = "truncated"
OVER_LIMIT = "over_limit"


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class Failure:
    reason: str  # UNPARSEABLE | TRUNCATED | OVER_LIMIT
    text: str  # the raw piece of the response that could not be used


# ---- Alpaca: "N. Instruction: ...", "N. Input:", "N. Output:" -----------------------------------------------------

_ITEM = re.compile(r"^[ \t]*(\d+)[ \t]*\.[ \t]*Instruction[ \t]*:", re.MULTILINE | re.IGNORECASE)
_ANY_FIELD = re.compile(r"^[ \t]*\d+[ \t]*\.[ \t]*(?:Input|Output)[ \t]*:", re.MULTILINE | re.IGNORECASE)
_SEPARATOR = re.compile(r"^[ \t]*#{2,}[ \t]*$", re.MULTILINE)


def _numbered_field(number: int, name: str) -> re.Pattern:
    # The same number as the item's instruction: a "5. Input:" inside item 4 means the numbering broke.
    return re.compile(rf"(?:^|(?<=\s)){number}[ \t]*\.[ \t]*{name}[ \t]*:", re.MULTILINE | re.IGNORECASE)


def parse_alpaca_tasks(text: str, first_number: int, finish_reason: str, limit: int = 16) -> list[Task | Failure]:
    """Items of a response to the Alpaca prompt, in order; the prompt ends with `{first_number}. Instruction:`.

    A completion teacher continues that line, a chat teacher usually repeats it: either way works, and chat
    preambles ("Sure! Here are ...") before the first item are dropped. When `finish_reason` is "length" only the
    last item, the one cut off, is lost (as `truncated`). Items past `limit` are `over_limit`."""
    body = _SEPARATOR.sub("", text)
    first = _ITEM.search(body)
    preamble = body[: first.start()] if first else body
    if _ANY_FIELD.search(preamble):
        body = f"{first_number}. Instruction:" + body  # the teacher continued the prompt's last line
    elif first:
        body = body[first.start():]
    elif body.strip():
        return [Failure(TRUNCATED if finish_reason == "length" else UNPARSEABLE, text)]
    else:
        return [Failure(UNPARSEABLE, text)]

    starts = [m for m in _ITEM.finditer(body)]
    items: list[Task | Failure] = []
    for position, match in enumerate(starts):
        end = starts[position + 1].start() if position + 1 < len(starts) else len(body)
        chunk = body[match.start():end]
        items.append(_alpaca_item(int(match.group(1)), chunk, match.end() - match.start()))
    if finish_reason == "length" and items:
        last = body[starts[-1].start():]
        items[-1] = Failure(TRUNCATED, last)
    return [item if n < limit else Failure(OVER_LIMIT, _raw(item)) for n, item in enumerate(items)]


def _alpaca_item(number: int, chunk: str, marker_length: int) -> Task | Failure:
    input_marker = _numbered_field(number, "Input").search(chunk, marker_length)
    if input_marker is None:
        return Failure(UNPARSEABLE, chunk)
    output_marker = _numbered_field(number, "Output").search(chunk, input_marker.end())
    if output_marker is None:
        return Failure(UNPARSEABLE, chunk)
    return Task(
        instruction=chunk[marker_length: input_marker.start()].strip(),
        input=chunk[input_marker.end(): output_marker.start()].strip(),
        output=chunk[output_marker.end():].strip(),
    )


def _raw(item: Task | Failure) -> str:
    if isinstance(item, Failure):
        return item.text
    return f"Instruction: {item.instruction}\nInput: {item.input}\nOutput: {item.output}"


# ---- Self-instruct step 1: a numbered list of instructions -------------------------------------------------------

_LIST_ITEM = re.compile(
    r"^[ \t]*(?:[-*][ \t]+)?(?:\*\*)?(?:Task[ \t]*)?(\d+)[ \t]*[.):][ \t]*(?:\*\*)?[ \t]*(.*?)[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_LABEL = re.compile(r"^(?:\*\*)?(?:Task|Instruction)[ \t]*:[ \t]*(?:\*\*)?[ \t]*", re.IGNORECASE)


def parse_instruction_list(
    text: str, first_number: int, finish_reason: str, continued: bool, limit: int = 16
) -> list[str | Failure]:
    """New instructions from a numbered list (`9. ...`, `9) ...`, `Task 9: ...`, `**9.** ...`), in order.

    `continued`: the prompt ended with `Task {first_number}:` and the teacher continued that line (completion
    teachers). Lines that are not list items (chat preambles, closing remarks) are ignored. When `finish_reason` is
    "length" the last item is `truncated`; items past `limit` are `over_limit`."""
    body = f"Task {first_number}: {text.lstrip()}" if continued else text
    items = [_clean_instruction(m.group(2)) for m in _LIST_ITEM.finditer(body)]
    items = [item for item in items if item]
    if not items:
        return [Failure(TRUNCATED if finish_reason == "length" and text.strip() else UNPARSEABLE, text)]
    found: list[str | Failure] = list(items)
    if finish_reason == "length":
        found[-1] = Failure(TRUNCATED, items[-1])
    return [item if n < limit else Failure(OVER_LIMIT, item if isinstance(item, str) else item.text)
            for n, item in enumerate(found)]


def _clean_instruction(text: str) -> str:
    text = _LABEL.sub("", text.strip()).strip()
    if text.endswith("**"):
        text = text[:-2].rstrip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


# ---- Self-instruct step 2: "Input: ..." and "Output: ..." for one instruction ------------------------------------

_FIELD = re.compile(r"^[ \t>#*_-]*(input|output|task)[ \t*_]*:[ \t*_]*", re.MULTILINE | re.IGNORECASE)


def parse_instance(text: str, classification: bool, finish_reason: str, continued: bool,
                   needs_output: bool = True) -> tuple[str, str] | Failure:
    """(input, output) of one example, tolerant of markdown (`**Input:**`) and of the teacher going on to another
    task. Ordinary tasks put `Input:` first; classification tasks `Output:` first (the class label) and must have an
    `Input:` after it. `continued`: the prompt ended with the first marker and the teacher continued after it.
    `needs_output=False` (the output will come from elsewhere): an ordinary task's answer may end after its input,
    as it does when the request stops at `Output:`; the output is then "".

    A missing input is "" (the no-input markers are normalised by the filters). A response cut by the length limit
    inside the fields it needs is `truncated`."""
    first = "output" if classification else "input"
    markers = [(m.group(1).lower(), m.start(), m.end()) for m in _FIELD.finditer(text)]
    opening = _FIELD.match(text.lstrip())
    if continued and not (opening and opening.group(1).lower() == first):
        markers.insert(0, (first, 0, 0))
    outputs = [i for i, m in enumerate(markers) if m[0] == "output"]
    if not outputs and not needs_output and not classification and markers and markers[0][0] == "input":
        if finish_reason == "length":
            return Failure(TRUNCATED, text)
        return _value(text, markers, 0)[0], ""
    if not outputs:
        return _incomplete(text, finish_reason)
    output_at = outputs[0]
    inputs_before = [i for i in range(output_at) if markers[i][0] == "input"]
    input_at = inputs_before[-1] if inputs_before else None  # the input nearest the output; none: no input
    if classification:  # the label first, then an input of that class (either order is accepted)
        input_at = next((i for i in range(output_at + 1, len(markers)) if markers[i][0] == "input"), input_at)
        if input_at is None:
            return _incomplete(text, finish_reason)
    output_value, output_cut = _value(text, markers, output_at)
    input_value, input_cut = _value(text, markers, input_at) if input_at is not None else ("", False)
    if finish_reason == "length" and (output_cut or input_cut):
        return Failure(TRUNCATED, text)
    return input_value, output_value


def _value(text: str, markers: list[tuple[str, int, int]], at: int) -> tuple[str, bool]:
    """The text after marker `at` up to the next marker, and whether it runs to the end of the response."""
    end = markers[at + 1][1] if at + 1 < len(markers) else len(text)
    return text[markers[at][2]: end].strip(), at + 1 >= len(markers)


def _incomplete(text: str, finish_reason: str) -> Failure:
    return Failure(TRUNCATED if finish_reason == "length" else UNPARSEABLE, text)
