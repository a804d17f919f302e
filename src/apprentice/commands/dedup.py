"""`apprentice dedup`: drop near-duplicate instructions (ROUGE-L F > threshold, exactly as rouge_score scores it).

    apprentice dedup alpaca_data.json --out kept.json [--against seed_tasks.jsonl] [--threshold 0.7]
        [--removed removed.jsonl]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
progress_console = Console(stderr=True)

# Below this many records the whole run takes well under a second: no progress bar.
_PROGRESS_MIN_RECORDS = 2000


def dedup(
    data: Path = typer.Argument(..., metavar="IN", help="Instruction data: an Alpaca JSON list or JSONL, each record "
                                                        "with an \"instruction\" string (other fields are kept)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the kept records, in their original order: "
                                                      "JSONL if the name ends in .jsonl, else a JSON list. "
                                                      "Replaced atomically."),
    against: Path = typer.Option(None, help="Reference instructions loaded before the data, e.g. the seed tasks "
                                            "(Self-Instruct JSONL, or Alpaca JSON/JSONL): records too close to any "
                                            "of them are removed too."),
    threshold: float = typer.Option(0.7, min=0.0, max=1.0, help="A record is a near duplicate when its "
                                                                "instruction's ROUGE-L F-measure is above this."),
    removed: Path = typer.Option(None, help="Also write the removed records here (JSONL if the name ends in .jsonl, "
                                            "else a JSON list): index, instruction, score, and the instruction it "
                                            "matched (matched_source input or against, matched_index, "
                                            "matched_instruction)."),
) -> None:
    """Remove near-duplicate instructions: keep a record unless its instruction scores ROUGE-L F > THRESHOLD against
    an instruction already kept or one in --against."""
    from apprentice.generate.dedup import dedup_records, read_instruction_records, write_records

    records = read_instruction_records(data)
    references = [record["instruction"] for record in read_instruction_records(against)] if against else []
    start = time.perf_counter()
    columns = (TextColumn("dedup"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=progress_console, transient=True,
                  disable=len(records) < _PROGRESS_MIN_RECORDS) as progress:
        task = progress.add_task("dedup", total=len(records))
        result = dedup_records([record["instruction"] for record in records], references, threshold,
                               progress=lambda done: progress.update(task, completed=done))
    elapsed = time.perf_counter() - start
    write_records(out, [records[position] for position in result.kept])
    if removed:
        write_records(removed, [dataclasses.asdict(removal) for removal in result.removed])
    from_against = sum(removal.matched_source == "against" for removal in result.removed)
    console.print(
        f"kept {len(result.kept):,} of {len(records):,}, removed {len(result.removed):,} "
        f"({len(result.removed) - from_against:,} close to an earlier record, {from_against:,} to --against) "
        f"with ROUGE-L F > {threshold} in {elapsed:.2f} s; wrote {out}" + (f" and {removed}" if removed else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(dedup)
