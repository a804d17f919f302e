"""The `apprentice` command line: a thin typer app. Each command group registers itself from `apprentice.commands`;
this file only assembles them and turns `UserError`s into one line and exit code 2."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from apprentice.errors import UserError

app = typer.Typer(
    help="Teach a small model to follow instructions from a strong one: generate data, train, judge, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err_console = Console(stderr=True)
_debug = False


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    global _debug
    _debug = debug


def _register_commands() -> None:
    from apprentice.commands import (annotate, answer, dedup, fidelity, generate, judge, models, pipeline, report,
                                     train)

    # the order of `apprentice --help`: the loop from one command, then its stages in order, then model tools
    for register in (pipeline.register, generate.register, dedup.register, train.register, answer.register,
                     fidelity.register, judge.register, annotate.register, report.register, models.register):
        register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except UserError as exc:
        if _debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
