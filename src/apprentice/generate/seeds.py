"""Seed tasks for instruction generation, in the Self-Instruct JSONL format, loaded strictly.

One task per line: `{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}`
(`name` may be left out; it then defaults to the id; other extra fields are ignored). Any problem stops the load with
one line naming the file and line. With no path, the seed file shipped with apprentice is read.

    python -c "from apprentice.generate.seeds import load_seed_tasks; print(len(load_seed_tasks()))"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apprentice.data import SEED_TASKS, shipped
from apprentice.errors import UserError
from apprentice.jsonfile import Where, describe, get_bool, get_list, get_str, parse_jsonl, read_text, require_object


@dataclass(frozen=True)
class Instance:
    """One worked example of a task; `input` is "" when the instruction needs none."""

    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: list[Instance]
    is_classification: bool


def parse_instances(record: dict[str, Any], where: Where) -> list[Instance]:
    """The record's `instances`: a non-empty list of `{"input": str, "output": str}` objects."""
    values = get_list(record, "instances", where)
    if not values:
        raise where.error("field 'instances' is empty; give at least one {\"input\", \"output\"} object")
    instances = []
    for index, value in enumerate(values):
        if not isinstance(value, dict):
            raise where.error(f'instances[{index}] must be an object with "input" and "output", got {describe(value)}')
        fields = []
        for key in ("input", "output"):
            if key not in value:
                raise where.error(f"instances[{index}] has no {key!r}")
            if not isinstance(value[key], str):
                raise where.error(f"instances[{index}].{key} must be a string, got {describe(value[key])}")
            fields.append(value[key])
        instances.append(Instance(*fields))
    return instances


def parse_seed_task(value: object, where: Where) -> SeedTask:
    """One seed task from a parsed JSONL line."""
    record = require_object(value, where)
    task_id = get_str(record, "id", where, non_empty=True)
    return SeedTask(
        id=task_id,
        name=get_str(record, "name", where, task_id),
        instruction=get_str(record, "instruction", where, non_empty=True),
        instances=parse_instances(record, where),
        is_classification=get_bool(record, "is_classification", where),
    )


def load_seed_tasks(path: Path | None = None) -> list[SeedTask]:
    """All seed tasks in `path` (default: the file shipped with apprentice), in file order."""
    path = shipped(SEED_TASKS) if path is None else Path(path)
    tasks: list[SeedTask] = []
    first_line: dict[str, int | None] = {}
    text = read_text(path)
    if text.lstrip().startswith("["):
        raise UserError(f"{path}: a JSON list; seed tasks are JSONL, one task object per line")
    for where, value in parse_jsonl(path, text):
        task = parse_seed_task(value, where)
        if task.id in first_line:
            raise where.error(f"duplicated id {task.id!r}, first used on line {first_line[task.id]}")
        first_line[task.id] = where.line
        tasks.append(task)
    if not tasks:
        raise UserError(f"{path}: no seed tasks in the file (expected one JSON object per line)")
    return tasks


def seed_to_json(task: SeedTask) -> dict[str, Any]:
    """The task as a Self-Instruct JSONL record, fields in the format's order."""
    return {
        "id": task.id,
        "name": task.name,
        "instruction": task.instruction,
        "instances": [{"input": instance.input, "output": instance.output} for instance in task.instances],
        "is_classification": task.is_classification,
    }
