"""`apprentice generate`: instruction data from a teacher model (self-instruct or Alpaca), filtered, deduplicated,
resumable. The options are `GenerateConfig`'s settings (generate/config.py); the work is done by
`apprentice.generate.run.generate`.

    apprentice generate --teacher bundled:smollm2-135m-instruct --num 20 --out runs/x
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from apprentice.generate.config import GenerateConfig
from apprentice.settings import command

console = Console()


def generate(config: GenerateConfig, estimate: bool = False, cancel_batches: Path | None = None) -> None:
    """Run (or estimate) one generate run and print its summary; a run stopped by a cap exits 1. (`cancel_batches`
    is done by its option's callback before the run's options are read: when it comes here it is None.)"""
    from apprentice.generate.run import generate as run_generate
    from apprentice.generate.stats import summary_table

    if estimate:
        from apprentice.generate.config import resolve
        from apprentice.generate.estimate import estimate_run, estimate_table, measured_basis
        from apprentice.generate.seeds import load_seed_tasks
        from apprentice.models.spec import model_identity, parse_spec

        seeds_loaded = load_seed_tasks(config.seeds)
        resolved = resolve(config)
        console.print(estimate_table(estimate_run(resolved, seeds_loaded, measured_basis(
            resolved, model_identity(parse_spec(config.teacher))))))
        return
    result = run_generate(config, Console(stderr=True))
    console.print(summary_table(result.stats))
    if result.resumed_from:
        how = "replayed from the response cache" if result.replayed else "continued with a fresh plan"
        console.print(f"resumed: {result.resumed_from} records were already in {config.out / 'data.jsonl'} ({how})")
    if result.status == "cost_capped":
        console.print(
            f"[bold red]stopped:[/] the next request could pass --max-cost ${config.max_cost:g} (paid so far "
            f"${result.paid_usd:.4f}); kept {result.stats.kept} of {config.num} records. Rerun with a higher --max-cost to "
            "go on.")
        raise typer.Exit(1)
    if result.status == "capped":
        reasons = ", ".join(f"{reason} {count}" for reason, count in result.stats.rejected.most_common(3))
        console.print(
            f"[bold red]stopped:[/] {result.config.max_requests} requests (--max-requests) kept only "
            f"{result.stats.kept} of {config.num} records; most rejections: {reasons or 'none'}. See "
            f"{config.out / 'rejected.jsonl'}; raise --max-requests or try another teacher or strategy."
        )
        raise typer.Exit(1)
    console.print(f"wrote {config.out / 'alpaca_data.json'} ({result.stats.kept} records)")


def _cancel_batches(out: Path | None) -> None:
    """`--cancel-batches OUT`, an action of its own: it runs before the other options are checked."""
    if out is None:
        return
    from apprentice.generate.run import cancel_batches

    batches, requests = cancel_batches(out)
    console.print(f"cancelled {batches} {'batch' if batches == 1 else 'batches'} ({requests} requests) of {out}"
                  if batches else f"{out} has no batches in flight", soft_wrap=True, highlight=False)
    raise typer.Exit()


ACTIONS = {
    "estimate": (bool, typer.Option(
        False, "--estimate",
        help="Send nothing: print the requests, tokens and cost to expect for the records still missing (measured "
             "from OUT when it has records, else from the plan and stated assumptions), with a range.")),
    "cancel_batches": (Path, typer.Option(
        None, "--cancel-batches", metavar="OUT", is_eager=True, callback=lambda value: _cancel_batches(value),
        help="Cancel the batches the run in OUT has in flight, and do nothing else; a rerun of the run records what "
             "they answered and submits the rest.")),
}


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(command(GenerateConfig, generate, extra=ACTIONS, doc=(
        "Generate instruction data (instruction, input, output) from a teacher, with filters and near-duplicate "
        "removal, into OUT/data.jsonl (with metadata), OUT/alpaca_data.json, OUT/rejected.jsonl and "
        "OUT/stats.json.")))
