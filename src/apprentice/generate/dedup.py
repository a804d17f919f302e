"""Near-duplicate removal for instruction data: Alpaca's ROUGE-L rule as a reusable step.

Walk the records in order; keep one unless its instruction's ROUGE-L F-measure against an instruction already kept,
or against a reference set (`against`, e.g. the seed tasks), is above the threshold. The core, `dedup_records`, is
pure; `read_instruction_records` and `write_records` are the file edges that `apprentice dedup` uses.

    python -m apprentice dedup alpaca_data.json --out kept.json --against seed_tasks.jsonl --removed removed.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.generate.rouge import RougeLIndex
from apprentice.jsonfile import get_str, read_records, require_object, write_text_atomic

INPUT = "input"
AGAINST = "against"


@dataclass(frozen=True)
class Removal:
    """A removed record and the instruction it was too close to (in the input or in the `against` set)."""

    index: int  # position in the input
    instruction: str
    score: float  # ROUGE-L F-measure with the closest earlier instruction, > threshold
    matched_source: str  # INPUT or AGAINST
    matched_index: int  # position in that source
    matched_instruction: str


@dataclass(frozen=True)
class DedupResult:
    kept: list[int]  # positions of the kept records in the input, ascending
    removed: list[Removal]


def dedup_records(
    instructions: Sequence[str],
    against: Sequence[str] = (),
    threshold: float = 0.7,
    progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Keep each instruction unless it scores F > `threshold` against a kept one or one of `against`.

    `progress(done)` is called every few hundred instructions and at the end."""
    index = RougeLIndex(threshold)
    sources: list[tuple[str, int, str]] = []  # index id -> where that instruction came from
    for position, text in enumerate(against):
        index.add(text)
        sources.append((AGAINST, position, text))
    kept: list[int] = []
    removed: list[Removal] = []
    for position, text in enumerate(instructions):
        match = index.query(text)
        if match.score > threshold:
            source, source_index, source_text = sources[match.index]
            removed.append(Removal(position, text, match.score, source, source_index, source_text))
        else:
            index.add(text)
            sources.append((INPUT, position, text))
            kept.append(position)
        if progress and (position + 1) % 256 == 0:
            progress(position + 1)
    if progress:
        progress(len(instructions))
    return DedupResult(kept, removed)


def read_instruction_records(path: Path) -> list[dict[str, Any]]:
    """The records of an Alpaca JSON list or a JSONL file; each must be an object with an "instruction" string."""
    records = []
    for where, value in read_records(path):
        record = require_object(value, where)
        get_str(record, "instruction", where)
        records.append(record)
    if not records:
        raise UserError(f"{path}: no records; expected a JSON list or JSONL of objects with an \"instruction\" field")
    return records


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as JSONL when the name ends in .jsonl, else as one indented JSON list; atomically (a temporary
    file in the same folder, then a rename), so a failed run never leaves half a file."""
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        text = json.dumps(list(records), ensure_ascii=False, indent=2) + "\n"
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    write_text_atomic(path, text)
