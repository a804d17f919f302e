"""Table-driven tests for the response parsers of `apprentice generate` (apprentice.generate.parse)."""

import pytest

from apprentice.generate.parse import (
    OVER_LIMIT,
    TRUNCATED,
    UNPARSEABLE,
    Failure,
    Task,
    parse_alpaca_tasks,
    parse_instance,
    parse_instruction_list,
)


def _shape(items):
    return [item.reason if isinstance(item, Failure) else item for item in items]


ALPACA_CASES = [
    (  # a completion teacher continues the prompt's "4. Instruction:" line
        "completion continuation",
        " Name a fruit.\n4. Input:\n<noinput>\n4. Output:\nApple.\n\n###\n5. Instruction: Add the numbers.\n"
        "5. Input:\n2, 3\n5. Output:\n5\n###\n",
        "stop",
        [Task("Name a fruit.", "<noinput>", "Apple."), Task("Add the numbers.", "2, 3", "5")],
    ),
    (
        "chat repeats the marker after a preamble",
        "Sure! Here are more tasks:\n\n4. Instruction: Name a fruit.\n4. Input:\n<noinput>\n4. Output:\nApple.",
        "stop",
        [Task("Name a fruit.", "<noinput>", "Apple.")],
    ),
    (
        "numbering breaks inside an item",
        "4. Instruction: Name a fruit.\n5. Input:\n<noinput>\n5. Output:\nApple.\n"
        "6. Instruction: Name a colour.\n6. Input:\n<noinput>\n6. Output:\nRed.",
        "stop",
        [UNPARSEABLE, Task("Name a colour.", "<noinput>", "Red.")],
    ),
    (
        "missing output",
        "4. Instruction: Name a fruit.\n4. Input:\n<noinput>\n",
        "stop",
        [UNPARSEABLE],
    ),
    (
        "length limit drops only the last item",
        "4. Instruction: A.\n4. Input:\nx\n4. Output:\ny\n5. Instruction: B.\n5. Input:\nx\n5. Output:\nthe ans",
        "length",
        [Task("A.", "x", "y"), TRUNCATED],
    ),
    ("no items at all", "I cannot help with that.", "stop", [UNPARSEABLE]),
    ("empty answer", "", "stop", [UNPARSEABLE]),
    ("cut before any item", "blah blah", "length", [TRUNCATED]),
    (
        "inline markers on one line",
        "4. Instruction: Say hi. 4. Input: <noinput> 4. Output: Hi!",
        "stop",
        [Task("Say hi.", "<noinput>", "Hi!")],
    ),
]


@pytest.mark.parametrize("name, text, finish, expected", ALPACA_CASES, ids=[c[0] for c in ALPACA_CASES])
def test_parse_alpaca_tasks(name, text, finish, expected):
    assert _shape(parse_alpaca_tasks(text, first_number=4, finish_reason=finish)) == expected


def test_parse_alpaca_tasks_limit():
    text = "".join(f"{n}. Instruction: T{n}.\n{n}. Input:\n<noinput>\n{n}. Output:\nO{n}\n" for n in range(4, 8))
    shape = _shape(parse_alpaca_tasks(text, first_number=4, finish_reason="stop", limit=2))
    assert shape == [Task("T4.", "<noinput>", "O4"), Task("T5.", "<noinput>", "O5"), OVER_LIMIT, OVER_LIMIT]


LIST_CASES = [
    ("chat list with preamble and remark", "Here you go:\n9. Write a poem.\n10) Explain tides.\nHope it helps!",
     "stop", False, ["Write a poem.", "Explain tides."]),
    ("markdown bold numbers and labels", "**9.** Instruction: Write a poem.\n- 10. \"Explain tides.\"",
     "stop", False, ["Write a poem.", "Explain tides."]),
    ("completion continues Task 9", " Write a poem.\nTask 10: Explain tides.", "stop", True,
     ["Write a poem.", "Explain tides."]),
    ("length cuts the last item", "9. Write a poem.\n10. Explain ti", "length", False,
     ["Write a poem.", TRUNCATED]),
    ("nothing numbered", "I love tasks.", "stop", False, [UNPARSEABLE]),
    ("empty items are skipped", "9.\n10. Explain tides.", "stop", False, ["Explain tides."]),
    ("empty answer", "", "stop", False, [UNPARSEABLE]),
]


@pytest.mark.parametrize("name, text, finish, continued, expected", LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_parse_instruction_list(name, text, finish, continued, expected):
    assert _shape(parse_instruction_list(text, 9, finish, continued=continued)) == expected


def test_parse_instruction_list_limit():
    text = "\n".join(f"{n}. Task number {n}." for n in range(9, 13))
    assert _shape(parse_instruction_list(text, 9, "stop", continued=False, limit=3)) == [
        "Task number 9.", "Task number 10.", "Task number 11.", OVER_LIMIT]


INSTANCE_CASES = [
    ("plain", "Input: 2, 3\nOutput: 5", False, "stop", False, ("2, 3", "5")),
    ("markdown", "**Input:** a cat\n**Output:** un chat", False, "stop", False, ("a cat", "un chat")),
    ("no input marker means no input", "Output: Paris is the capital.", False, "stop", False,
     ("", "Paris is the capital.")),
    ("completion continues after Input:", " 2, 3\nOutput: 5\nTask: Next one", False, "stop", True, ("2, 3", "5")),
    ("completion repeats the marker", "Input: 2, 3\nOutput: 5", False, "stop", True, ("2, 3", "5")),
    ("multi-line output kept", "Input: <noinput>\nOutput: Line one.\n\nLine two.", False, "stop", False,
     ("<noinput>", "Line one.\n\nLine two.")),
    ("stops at the next task", "Input: x\nOutput: y\nTask: another\nInput: z\nOutput: w", False, "stop", False,
     ("x", "y")),
    ("no output", "Input: something", False, "stop", False, UNPARSEABLE),
    ("garbage", "lorem ipsum", False, "stop", False, UNPARSEABLE),
    ("cut inside the output", "Input: x\nOutput: half an ans", False, "length", False, TRUNCATED),
    ("length but complete before the next task", "Input: x\nOutput: y\nTask: more", False, "length", False,
     ("x", "y")),
    ("classification output first", "Output: positive\nInput: I loved it.", True, "stop", False,
     ("I loved it.", "positive")),
    ("classification completion", " spam\nInput: WIN A PRIZE NOW", True, "stop", True, ("WIN A PRIZE NOW", "spam")),
    ("classification in the other order", "Input: I hated it.\nOutput: negative", True, "stop", False,
     ("I hated it.", "negative")),
    ("classification without input", "Output: positive", True, "stop", False, UNPARSEABLE),
]


@pytest.mark.parametrize("name, text, classification, finish, continued, expected", INSTANCE_CASES,
                         ids=[c[0] for c in INSTANCE_CASES])
def test_parse_instance(name, text, classification, finish, continued, expected):
    result = parse_instance(text, classification, finish, continued)
    assert (result.reason if isinstance(result, Failure) else result) == expected


@pytest.mark.parametrize("text, classification, finish, continued, expected", [
    (" The cat sat on the mat.", False, "stop", True, ("The cat sat on the mat.", "")),  # stopped at "Output:"
    ("Input: <noinput>", False, "stop", False, ("<noinput>", "")),
    ("**Input:** a list\n**Output:** sorted", False, "stop", False, ("a list", "sorted")),  # the output is kept
    (" a very long input that was cut", False, "length", True, Failure(TRUNCATED, " a very long input that was cut")),
    (" positive\nInput: I loved it.", True, "stop", True, ("I loved it.", "positive")),
    (" positive", True, "stop", True, Failure(UNPARSEABLE, " positive")),  # a class label needs its input
    ("I have no idea.", False, "stop", False, Failure(UNPARSEABLE, "I have no idea.")),
])
def test_parse_instance_without_an_output(text, classification, finish, continued, expected):
    assert parse_instance(text, classification, finish, continued, needs_output=False) == expected
