"""`apprentice fidelity`: how close models are to the teacher, without a judge.

    apprentice fidelity --teacher teacher.json --model bundled:gemma-3-270m --model hf:runs/x/student \
        --answers base.json --answers student.json [--out fidelity.json] [--json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from apprentice.errors import UserError

console = Console()


def fidelity(
    teacher: Path = typer.Option(..., "--teacher", help="The teacher's answers: AlpacaEval model_outputs.json, as "
                                                        "`apprentice answer` writes it."),
    models: list[str] = typer.Option(None, "--model", "-m", help="A local model to score (hf:, gguf:, bundled:, or a "
                                                                 "trained student hf:runs/x/student); repeat for "
                                                                 "several, reported in the order given."),
    answers: list[Path] = typer.Option(None, "--answers", help="An outputs file answering the teacher's prompts, "
                                                               "measured against the teacher's answers; repeatable."),
    prompts: Path = typer.Option(None, help="The prompts the answers were made from, so the Alpaca template gets "
                                            "each input as `answer` gave it (default: the shipped evaluation set; "
                                            "other prompts are taken whole as the instruction)."),
    batch_size: int = typer.Option(8, min=1, help="Sequences scored together (length-sorted, padding masked)."),
    max_len: int = typer.Option(None, min=2, help="Cut prompt + answer to this many tokens, as training does "
                                                  "(default: the model's context length)."),
    device: str = typer.Option("cpu", help="Torch device for scoring; weights are float32 on any device."),
    base_template: bool = typer.Option(False, "--base-template", help="Score chat models with the Alpaca template "
                                                                      "(as `answer --base-template`)."),
    out: Path = typer.Option(None, "--out", help="Also write the report as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Score how close models are to the teacher: the NLL of the teacher's answers under each model, teacher-forced
    with the template the model answers with (total NLL / total target tokens, in nats per token: the loss training
    minimises), and for each answers file its stop rate, median length ratio, ROUGE-L to the teacher, distinct
    2-grams and share of answers with lists or markdown, beside the teacher's own values."""
    from apprentice.evaluate.fidelity import fidelity_report
    from apprentice.jsonfile import write_json_atomic

    if not models and not answers:
        raise UserError("nothing to measure: give --model (to score) or --answers (to compare), or both")
    report = fidelity_report(teacher, models or [], answers or [], batch_size=batch_size, prompts_file=prompts,
                             max_len=max_len, device=device, base_template=base_template)
    if out:
        write_json_atomic(out, report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report, console)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def print_report(report: dict[str, Any], out: Console) -> None:
    if report["models"]:
        table = Table(title="Likelihood of the teacher's answers (NLL: nats per target token; lower = closer)")
        for column in ("model", "prompts", "tokens", "NLL", "perplexity", "template"):
            table.add_column(column, justify="left" if column in ("model", "template") else "right")
        for row in report["models"]:
            table.add_row(row["model"], str(row["prompts"]), str(row["tokens"]), _fmt(row["nll"]),
                          _fmt(row["perplexity"], 2), row["prompt_style"])
        out.print(table)
    if report["answers"]:
        # one column per file, then the teacher's: base -> student -> teacher reads left to right
        table = Table(title="Behaviour next to the teacher's answers")
        table.add_column("measure")
        for row in report["answers"]:
            table.add_column(Path(row["file"]).name, justify="right")
        table.add_column(f"teacher ({Path(report['teacher']['file']).name})", justify="right", style="dim")
        rows = [row["measures"] for row in report["answers"]] + [report["teacher"]["measures"]]
        table.add_row("prompts", *(str(row["prompts"]) for row in report["answers"]), str(report["teacher"]["prompts"]))
        for key, name, digits in (("stop_rate", "stop rate", 3), ("length_ratio", "length ratio (median)", 3),
                                  ("median_words", "words (median)", 1), ("rouge_l", "ROUGE-L F to the teacher", 3),
                                  ("distinct_2", "distinct 2-grams", 3), ("markdown", "lists / markdown", 3)):
            table.add_row(name, *(_fmt(m[key], digits) for m in rows))
        out.print(table)
        for row in report["answers"]:
            if row["missing"] or row["extra"]:
                out.print(f"{row['file']}: measured over the {row['prompts']} prompts it shares with the teacher; "
                          f"{row['missing']} teacher prompts have no answer there, {row['extra']} answers are to "
                          "other prompts", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(fidelity)
