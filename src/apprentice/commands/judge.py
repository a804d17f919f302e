"""Commands for blind pairwise evaluation: `judge` (an LLM judge over two output files) and `tally` (statistics).

    apprentice judge --a student.json --b teacher.json --judge bundled:smollm2-135m-instruct --out judgments.json
    apprentice tally judgments.json [--model NAME] [--json]
    apprentice tally --compare votes.sqlite judgments.json     # humans against the judge on the same pairs
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from apprentice.evaluate.judge import JudgeConfig
from apprentice.settings import command

console = Console()


def _judge(config: JudgeConfig) -> None:
    from apprentice.evaluate.judge import run_judge

    run_judge(config, console)


def tally(
    files: list[Path] = typer.Argument(..., help="Annotation JSON files (ours or AlpacaEval's), JSONL exports or "
                                                  "votes databases from `apprentice annotate`; each is tallied on "
                                                  "its own."),
    model: str = typer.Option(None, "--model", help="Whose win rate to report (a generator name; default: "
                                                    "generator_2 of the first annotation, i.e. judge's --b)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per file, instead of tables."),
    seed: int = typer.Option(0, help="Seed of the bootstrap interval."),
    compare: bool = typer.Option(False, "--compare", help="Instead, compare two files on the pairs both judged "
                                                          "(human votes against the judge, say): agreement with and "
                                                          "without ties, Cohen's kappa, the confusion table."),
) -> None:
    """Wins, ties, losses, win rate with confidence intervals, sign test and length control for pairwise judgments;
    agreement between annotators and accuracy on control pairs where the file has them."""
    from apprentice.errors import UserError
    from apprentice.evaluate.tally import compare_files, print_comparison, print_summary, tally_file

    if compare:
        if len(files) != 2:
            raise UserError(f"--compare needs exactly two files, got {len(files)}")
        result = compare_files(*files)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            print_comparison(result, console)
        return
    summaries = [tally_file(path, model, seed) for path in files]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
        return
    for summary in summaries:
        print_summary(summary, console)


def register(app: typer.Typer) -> None:
    app.command(name="judge")(command(JudgeConfig, _judge, doc=(
        "Ask an LLM judge which of two models' outputs is better for each instruction; write AlpacaEval annotations.")))
    app.command(name="tally")(tally)
