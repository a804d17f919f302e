"""Prompts for the teacher, built from the text files beside this module (`prompt_*.txt`).

Pure functions: each takes the tasks to show and returns the prompt text; `loop.py` wraps them in `Request`s.
Two strategies:

* `alpaca`: one prompt shows 3 seed tasks (instruction, input, output) and the teacher continues the list from
  task 4 (`alpaca_prompt`).
* `self-instruct`: a bootstrapping prompt lists 8 instructions and asks for more (`bootstrap_prompt`), then one
  prompt per new instruction asks for its input and output (`instance_prompt`); classification tasks ask for the
  output (the class) first, so the teacher does not write only inputs of one class.

Whether an instruction is a classification task is decided by `looks_like_classification`, a keyword heuristic,
not by asking the teacher: it costs nothing, is deterministic, and small teachers answer such yes/no questions
about their own tasks no better than chance.

    python -c "from apprentice.generate.prompts import load_prompt; print(load_prompt('alpaca').template)"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from string import Template

NO_INPUT = "<noinput>"
PROMPT_NAMES = ("alpaca", "bootstrap_chat", "bootstrap_completion", "instance", "instance_classification")


@cache
def load_prompt(name: str) -> Template:
    """The prompt template `prompt_<name>.txt` (placeholders are `$name`, so braces in seed tasks are harmless)."""
    if name not in PROMPT_NAMES:
        raise ValueError(f"unknown prompt {name!r}")
    return Template((Path(__file__).with_name(f"prompt_{name}.txt")).read_text(encoding="utf-8"))


def alpaca_prompt(examples: Sequence[tuple[str, str, str]]) -> str:
    """The one-pass prompt: `examples` are (instruction, input, output) shown as tasks 1..k; the teacher writes k+1..

    An empty input is shown as `<noinput>`, as the guidelines in the prompt ask the teacher to write it."""
    blocks = []
    for number, (instruction, input_text, output) in enumerate(examples, start=1):
        blocks.append(
            f"###\n{number}. Instruction: {instruction.strip()}\n{number}. Input:\n{input_text.strip() or NO_INPUT}\n"
            f"{number}. Output:\n{output.strip()}\n"
        )
    # the teacher continues right after the last marker, as Alpaca's prompt does
    return load_prompt("alpaca").substitute(examples="".join(blocks), next=len(examples) + 1).rstrip()


def bootstrap_prompt(instructions: Sequence[str], count: int, chat: bool) -> str:
    """Ask for `count` new instructions after the numbered `instructions` (chat: a request; completion: a list to
    continue, one `Task N:` per line)."""
    if chat:
        tasks = "\n".join(f"{n}. {_one_line(text)}" for n, text in enumerate(instructions, start=1))
        return load_prompt("bootstrap_chat").substitute(tasks=tasks, count=count, next=len(instructions) + 1)
    tasks = "\n".join(f"Task {n}: {_one_line(text)}" for n, text in enumerate(instructions, start=1))
    return load_prompt("bootstrap_completion").substitute(tasks=tasks, next=len(instructions) + 1).rstrip()


def instance_prompt(
    instruction: str, examples: Sequence[tuple[str, str, str]], classification: bool, chat: bool
) -> str:
    """Ask for one (input, output) of `instruction`, after worked `examples` (instruction, input, output).

    Classification prompts put `Output:` before `Input:`. Completion prompts end with the first marker so the
    teacher continues right after it; chat prompts end with the task (the reply repeats the markers)."""
    first, second = ("Output", "Input") if classification else ("Input", "Output")
    blocks = []
    for example_instruction, input_text, output in examples:
        fields = {"Input": input_text.strip() or NO_INPUT, "Output": output.strip()}
        blocks.append(
            f"Task: {example_instruction.strip()}\n{first}: {fields[first]}\n{second}: {fields[second]}\n"
        )
    name = "instance_classification" if classification else "instance"
    answer = "" if chat else f"{first}:"
    return load_prompt(name).substitute(
        examples="\n".join(blocks), instruction=_one_line(instruction), answer=answer
    ).rstrip()


def _one_line(text: str) -> str:
    return " ".join(text.split())


_CLASSIFICATION = re.compile(
    r"\bclassif(?:y|ied|ication)\b|\bcategori[sz]e\b|\b(?:which|what) (?:category|class|type|genre)\b"
    r"|\bsentiment\b|\byes or no\b|\btrue or false\b|\b(?:positive|negative),? or (?:negative|positive|neutral)\b"
    r"|\b(?:determine|decide|tell|identify|detect|judge|check) (?:me )?(?:whether|if)\b"
    r"|\bis (?:it|this|that|the \w+) (?:a |an )?[\w-]+ or (?:a |an )?[\w-]+\??$"
    r"|\blabel\b|\bspam\b|\bfact or opinion\b",
    re.IGNORECASE,
)


def looks_like_classification(instruction: str) -> bool:
    """Whether an instruction asks to put its input into one of a few classes (a keyword heuristic)."""
    return bool(_CLASSIFICATION.search(instruction.strip()))
