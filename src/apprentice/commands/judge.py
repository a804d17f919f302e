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

from apprentice.models.base import BackendOptions

from apprentice.models.spec import SPEC_HELP

console = Console()


def judge(
    a: Path = typer.Option(..., "--a", help="Outputs of model A (AlpacaEval model_outputs.json); output_1 in the "
                                            "annotations."),
    b: Path = typer.Option(..., "--b", help="Outputs of model B, same instructions; output_2 in the annotations, "
                                            "the model whose win rate `tally` reports by default."),
    judge_spec: str = typer.Option(..., "--judge", help=f"The judge model ({SPEC_HELP})."),
    out: Path = typer.Option(..., "--out", help="Where to write the annotations JSON (replaced atomically)."),
    orders: int = typer.Option(2, "--orders", min=1, max=2,
                               help="2: judge A-first and B-first, disagreement is a tie; 1: one seeded random "
                                    "order per pair (half the calls, no position-bias check)."),
    seed: int = typer.Option(0, help="Decides which output is shown first with --orders 1, and the controls."),
    controls: int = typer.Option(0, min=0, help="Control pairs to judge too (a real answer against another "
                                                "instruction's answer or its own first sentence, sides balanced): "
                                                "the judge's accuracy on them is shown beside its verdicts, never "
                                                "in the win rate."),
    cache: Path = typer.Option(None, help="SQLite record and cache of judge calls, so reruns and resumed runs cost "
                                          "nothing (default: OUT with the suffix .cache.sqlite)."),
    limit: int = typer.Option(None, min=1, help="Judge only the first N instructions of A (a quick look)."),
    max_tokens: int = typer.Option(16, min=1, help="Most tokens per judge reply; a verdict needs a few."),
    concurrency: int = typer.Option(8, min=1, help="HTTP judges: requests in flight at once."),
    batch_size: int = typer.Option(8, min=1, help="Local judges: prompts generated together."),
    device: str = typer.Option(None, help="Local judges: torch device (default: cuda when available, else cpu)."),
    timeout: float = typer.Option(BackendOptions.timeout, help="HTTP judges: seconds to wait for one answer before "
                                                               "retrying."),
    max_retries: int = typer.Option(BackendOptions.max_retries,
                                    help="HTTP judges: retries after the first try on 429, 5xx, timeouts and dropped "
                                         "connections."),
    batch: bool = typer.Option(False, "--batch", help="openai: judges: ask each round of judge calls as one Batch API "
                                                      "batch (OpenAI: half price, answers within 24 hours), recorded "
                                                      "in --cache; a rerun polls it instead of paying again."),
    rpm: float = typer.Option(None, help="HTTP judges: requests per minute at most, spread evenly (the provider's "
                                         "limit: no 429s)."),
    tpm: float = typer.Option(None, help="HTTP judges: tokens per minute at most (each request's prompt tokens, "
                                         "estimated, plus --max-tokens)."),
) -> None:
    """Ask an LLM judge which of two models' outputs is better for each instruction; write AlpacaEval annotations."""
    from apprentice.evaluate.judge import judge_files
    from apprentice.models.ratelimit import check_limits

    check_limits(rpm, tpm)
    judge_files(a, b, judge_spec, out, orders=orders, seed=seed, max_tokens=max_tokens, cache=cache, limit=limit,
                options=BackendOptions(concurrency=concurrency, batch_size=batch_size, device=device,
                                       timeout=timeout, max_retries=max_retries, batch=batch, rpm=rpm, tpm=tpm),
                console=console, controls=controls)


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
    app.command(name="judge")(judge)
    app.command(name="tally")(tally)
