"""Evaluation prompts for `apprentice answer`: read strictly from any of the ecosystem's three layouts.

The layout is told by content (JSON list or JSONL, then the first record's fields); every record must then fit it:

* Self-Instruct evaluation JSONL, `{"id", "instruction", "instances": [{"input", "output"}], ...}`: one prompt per
  instruction, with the first instance's input. `dataset` is "selfinstruct" for the 252 user-oriented instructions
  (ids `user_oriented_task_N`), "apprentice" for the set shipped with apprentice, else the file's stem.
* AlpacaEval, `[{"instruction", "dataset"?, ...}]`: the instruction already contains any input.
* Alpaca, `[{"instruction", "input", "output"?}]` (JSON list or JSONL).

A prompt's `text` is what a model is asked: the instruction, then a blank line and the input when there is one, as
AlpacaEval writes it, so outputs can be compared with AlpacaEval's by instruction text. With no path, the evaluation
set shipped with apprentice is read.

    python -c "from apprentice.evaluate.prompts import load_prompts; print(load_prompts()[0].text)"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apprentice.data import EVAL_INSTRUCTIONS, shipped
from apprentice.errors import UserError
from apprentice.generate.seeds import parse_instances
from apprentice.jsonfile import Where, get_str, read_records, require_object
from apprentice.train.templates import user_message

SELF_INSTRUCT_LAYOUT = "Self-Instruct evaluation JSONL"
ALPACA_LAYOUT = "Alpaca data"
ALPACA_EVAL = "AlpacaEval instructions"


@dataclass(frozen=True)
class EvalPrompt:
    instruction: str
    input: str = ""
    dataset: str = "apprentice"
    id: str = ""
    category: str = ""

    @property
    def text(self) -> str:
        """The instruction and, when non-empty, the input after a blank line (AlpacaEval's convention)."""
        return user_message(self.instruction, self.input)


def detect_layout(record: dict[str, Any]) -> str:
    """Which layout a file is in, judged by its first record's fields."""
    if "instances" in record:
        return SELF_INSTRUCT_LAYOUT
    if "input" in record:
        return ALPACA_LAYOUT
    return ALPACA_EVAL


def _self_instruct_dataset(prompt_id: str, path: Path) -> str:
    if prompt_id.startswith("user_oriented"):
        return "selfinstruct"
    if prompt_id.startswith("apprentice_eval"):
        return "apprentice"
    return path.stem


def parse_prompt(record: dict[str, Any], where: Where, layout: str, index: int) -> EvalPrompt:
    """One prompt from a record of the given layout; `index` is its position, which names prompts without an id."""
    hint = f" (the file is read as {layout}, like its first record)"
    instruction = get_str(record, "instruction", where, non_empty=True)
    if layout == SELF_INSTRUCT_LAYOUT:
        if "instances" not in record:
            raise where.error(f"missing field 'instances'{hint}")
        prompt_id = get_str(record, "id", where, non_empty=True)
        return EvalPrompt(
            instruction=instruction,
            input=parse_instances(record, where)[0].input,
            dataset=get_str(record, "dataset", where, _self_instruct_dataset(prompt_id, where.path)),
            id=prompt_id,
            category=get_str(record, "category", where, ""),
        )
    if layout == ALPACA_LAYOUT and "input" not in record:
        raise where.error(f"missing field 'input'{hint}")
    if layout == ALPACA_EVAL and "input" in record:
        raise where.error(f"unexpected field 'input'{hint}: AlpacaEval instructions already contain their input")
    return EvalPrompt(
        instruction=instruction,
        input=get_str(record, "input", where, ""),
        dataset=get_str(record, "dataset", where, where.path.stem),
        id=get_str(record, "id", where, f"{where.path.stem}_{index}"),
    )


def load_prompts(path: Path | None = None) -> list[EvalPrompt]:
    """All prompts in `path` (default: the evaluation set shipped with apprentice), in file order."""
    path = shipped(EVAL_INSTRUCTIONS) if path is None else Path(path)
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no prompts in the file")
    layout = detect_layout(require_object(records[0][1], records[0][0]))
    prompts: list[EvalPrompt] = []
    first_place: dict[str, str] = {}
    for index, (where, value) in enumerate(records):
        prompt = parse_prompt(require_object(value, where), where, layout, index)
        if prompt.id in first_place:
            raise where.error(f"duplicated id {prompt.id!r}, first used on {first_place[prompt.id]}")
        first_place[prompt.id] = where.place
        prompts.append(prompt)
    return prompts
