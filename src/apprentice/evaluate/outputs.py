"""AlpacaEval `model_outputs.json` files: load them strictly and pair two of them on the instruction text.

    from apprentice.evaluate.outputs import load_outputs, join_outputs
    pairs = join_outputs(load_outputs("student.json"), load_outputs("teacher.json"), "student.json", "teacher.json")

A file is a JSON list of `{"instruction", "output", "generator", "dataset"}`; `generator` defaults to the file's name
and `dataset` to None when absent. Every problem is one `UserError` line naming the file and the item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apprentice.errors import UserError


@dataclass(frozen=True)
class ModelOutput:
    instruction: str
    output: str
    generator: str
    dataset: str | None = None
    finish_reason: str | None = None  # "stop" or "length" when the file says (apprentice answer writes it)


@dataclass(frozen=True)
class Pair:
    """One instruction answered by two models; A and B are the two files in the order the user named them."""

    instruction: str
    output_a: str
    output_b: str
    generator_a: str
    generator_b: str
    dataset: str | None = None


def _default_generator(path: Path) -> str:
    name = path.name
    for suffix in (".json", ".model_outputs"):
        name = name.removesuffix(suffix)
    return name or path.name


def read_json(path: str | Path, what: str) -> object:
    """Parse a JSON file, turning a missing file or a syntax error into one line naming the place to fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.__class__.__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg}); expected {what}") from None


def load_outputs(path: str | Path) -> list[ModelOutput]:
    """Read an AlpacaEval model outputs file; raises UserError on anything that is not one."""
    path = Path(path)
    what = 'an AlpacaEval outputs list [{"instruction", "output", "generator"}]'
    data = read_json(path, what)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected {what}, found a JSON {type(data).__name__}")
    if not data:
        raise UserError(f"{path}: the outputs list is empty")
    default_generator = _default_generator(path)
    outputs: list[ModelOutput] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{path}: item {index} is a {type(item).__name__}, expected an object")
        for key in ("instruction", "output"):
            if key not in item:
                raise UserError(f"{path}: item {index} has no {key!r}")
            if not isinstance(item[key], str):
                raise UserError(f"{path}: item {index}: {key!r} must be a string, found {type(item[key]).__name__}")
        for key in ("generator", "dataset", "finish_reason"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise UserError(f"{path}: item {index}: {key!r} must be a string, found {type(item[key]).__name__}")
        instruction = item["instruction"]
        if instruction in first_seen:
            raise UserError(
                f"{path}: item {index} repeats the instruction of item {first_seen[instruction]}: "
                f"{_preview(instruction)}"
            )
        first_seen[instruction] = index
        outputs.append(ModelOutput(instruction, item["output"], item.get("generator") or default_generator,
                                   item.get("dataset"), item.get("finish_reason")))
    return outputs


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def join_outputs(a: list[ModelOutput], b: list[ModelOutput], a_name: str = "A", b_name: str = "B") -> list[Pair]:
    """Pair the outputs of A and B that answer the same instruction, in A's order.

    Both files must cover exactly the same instructions: a comparison over a silently shrunken set would report a
    win rate on different questions than the user thinks."""
    by_instruction_b = {o.instruction: o for o in b}
    instructions_a = {o.instruction for o in a}
    only_a = [o.instruction for o in a if o.instruction not in by_instruction_b]
    only_b = [o.instruction for o in b if o.instruction not in instructions_a]
    if only_a or only_b:
        both = len(a) - len(only_a)
        first = only_a[0] if only_a else only_b[0]
        where = a_name if only_a else b_name
        raise UserError(
            f"{a_name} and {b_name} answer different instructions: {len(only_a)} only in {a_name}, "
            f"{len(only_b)} only in {b_name}, {both} in both; first only in {where}: {_preview(first)}"
        )
    pairs = []
    for out_a in a:
        out_b = by_instruction_b[out_a.instruction]
        pairs.append(Pair(out_a.instruction, out_a.output, out_b.output, out_a.generator, out_b.generator,
                          out_a.dataset if out_a.dataset is not None else out_b.dataset))
    return pairs
