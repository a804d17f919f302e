"""`apprentice report RUN`: write RUN/report.html, one self-contained page about a run directory, and print its path.

    apprentice report runs/demo [--open]
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer


def report(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="A run directory, as `apprentice run` writes it; parts "
                                                            "not run yet show as such."),
    open_page: bool = typer.Option(False, "--open/--no-open", help="Also open the report in the default browser."),
) -> None:
    """Write DIR/report.html: data, training, answers, the blind comparison, side-by-side examples, before/after."""
    from apprentice.pipeline.report import build_report

    path = build_report(run_dir)
    print(path)
    if open_page:
        webbrowser.open(path.resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command()(report)
