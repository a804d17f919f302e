"""`apprentice run CONFIG.toml` (the whole loop from one config) and `apprentice demo` (the offline demo)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from apprentice.pipeline.run import STAGE_NAMES

console = Console()
FROM_HELP = (f"Redo this stage and every one after it ({', '.join(STAGE_NAMES)}); their earlier outputs are moved "
             "to RUN/replaced/.")


def run(
    config: Path = typer.Argument(..., help="The run config (TOML): [teacher], [generate], [train], [eval], [judge]."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<config file name>)."),
    from_stage: str = typer.Option(None, "--from", help=FROM_HELP),
    estimate: bool = typer.Option(
        False, "--estimate", help="Send nothing: print what the generate stage should take (requests, tokens, cost) "
                                  "for the records still missing, as `apprentice generate --estimate` does."),
) -> None:
    """Run the whole loop (generate, train, answers, fidelity, judge, tally, report), skipping stages that are up
    to date, continuing interrupted ones, and never sending a model request that was already answered."""
    from apprentice.pipeline.config import load_config
    from apprentice.pipeline.run import estimate_generate, run_pipeline

    loaded = load_config(config)
    run_dir = out or Path("runs") / config.stem
    if estimate:
        console.print(estimate_generate(loaded, run_dir))
        return
    report = run_pipeline(loaded, run_dir, from_stage, console)
    console.print(f"[bold green]done[/]: open {report}", highlight=False)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
    teacher: str = typer.Option(None, "--teacher", help="Use this teacher (and judge) instead of the bundled one."),
    num: int = typer.Option(None, "--num", help="Instruction records to generate (demo: 20)."),
    from_stage: str = typer.Option(None, "--from", help=FROM_HELP),
) -> None:
    """The Alpaca loop offline on the bundled models (teacher SmolLM2-135M-Instruct, student Gemma-3-270M, LoRA)."""
    from apprentice.pipeline.config import demo_config
    from apprentice.pipeline.run import run_pipeline

    config = demo_config(teacher=teacher, num=num)
    console.print(f"demo: teacher {config.teacher.model}, student {config.train.base} (LoRA), {config.generate.num} "
                  f"records, {config.eval.limit} eval prompts -> {out}", highlight=False)
    report = run_pipeline(config, out, from_stage, console)
    console.print(f"[bold green]done[/]: open {report}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(demo)
