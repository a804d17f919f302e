"""The generation prompts: every shipped template loads and fills, and the classification heuristic (table)."""

import pytest

from apprentice.generate.parse import Task, parse_alpaca_tasks, parse_instance, parse_instruction_list
from apprentice.generate.prompts import (
    PROMPT_NAMES,
    alpaca_prompt,
    bootstrap_prompt,
    instance_prompt,
    load_prompt,
    looks_like_classification,
)

EXAMPLES = [
    ("Name a {fruit}.", "", "Apple."),
    ("Add the numbers.", "2, 3", "5"),
    ("Is this review positive or negative?", "Great $5 pizza!", "positive"),
]


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_every_prompt_template_loads(name):
    template = load_prompt(name).template
    assert template.strip() and "$" in template


def test_alpaca_prompt_numbers_examples_and_ends_at_the_next_task():
    text = alpaca_prompt(EXAMPLES)
    assert "1. Instruction: Name a {fruit}.\n1. Input:\n<noinput>\n1. Output:\nApple.\n" in text
    assert "3. Input:\nGreat $5 pizza!\n" in text  # a dollar sign in a seed is data, not a placeholder
    assert text.endswith("###\n4. Instruction:")
    # what a completion teacher writes after the prompt parses as task 4
    continuation = " Say hi.\n4. Input:\n<noinput>\n4. Output:\nHi!"
    assert parse_alpaca_tasks(continuation, 4, "stop") == [Task("Say hi.", "<noinput>", "Hi!")]


@pytest.mark.parametrize("chat", [True, False])
def test_bootstrap_prompt_lists_the_instructions_and_continues_the_numbering(chat):
    shown = [f"Task text {n}\nwith a newline" for n in range(8)]
    text = bootstrap_prompt(shown, count=8, chat=chat)
    assert ("8. Task text 7 with a newline" if chat else "Task 8: Task text 7 with a newline") in text
    if chat:
        assert "continues from 9" in text and "Write 8 new tasks" in text
    else:
        assert text.endswith("Task 9:")
    answer = "9. Write a limerick." if chat else " Write a limerick."
    assert parse_instruction_list(answer, 9, "stop", continued=not chat) == ["Write a limerick."]


@pytest.mark.parametrize("classification", [False, True])
@pytest.mark.parametrize("chat", [True, False])
def test_instance_prompt_shows_examples_in_the_order_it_asks_for(classification, chat):
    text = instance_prompt("Sort the words.", EXAMPLES[:2], classification, chat)
    first, second = ("Output", "Input") if classification else ("Input", "Output")
    assert f"Task: Add the numbers.\n{first}: " in text and f"\n{second}: " in text
    assert "Input: <noinput>" in text  # an empty example input is shown with the no-input marker
    assert text.rstrip().endswith("Task: Sort the words." if chat else f"Task: Sort the words.\n{first}:")
    answer = f"{first}: a\n{second}: b" if chat else f" a\n{second}: b"
    expected = ("b", "a") if classification else ("a", "b")
    assert parse_instance(answer, classification, "stop", continued=not chat) == expected


CLASSIFICATION_CASES = [
    ("Classify the sentiment of the tweet.", True),
    ("Categorize these animals into mammals and birds.", True),
    ("Is the following statement true or false?", True),
    ("Determine whether the email is spam.", True),
    ("Tell me if this sentence is grammatically correct.", True),
    ("Which category does this product belong to?", True),
    ("Is this a fact or opinion?", True),
    ("Write a poem about autumn.", False),
    ("Summarize the article in two sentences.", False),
    ("Explain how photosynthesis works.", False),
    ("Translate the sentence into French.", False),
]


@pytest.mark.parametrize("instruction, expected", CLASSIFICATION_CASES)
def test_looks_like_classification(instruction, expected):
    assert looks_like_classification(instruction) is expected
