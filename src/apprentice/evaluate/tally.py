"""Read judgments from files and show their statistics: the I/O around `stats.summarize` for `apprentice tally`.

    from apprentice.evaluate.tally import tally_file, print_summary
    print_summary(tally_file("judgments.json"))

A file is an AlpacaEval-style annotations JSON list (ours, or AlpacaEval's own, AlpacaEval 2's fractional
preferences included) or a human-votes SQLite database written by `apprentice annotate` (recognised by its header
bytes, not its name).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from apprentice.errors import UserError
from apprentice.evaluate.outputs import read_json
from apprentice.evaluate.stats import summarize

SQLITE_HEADER = b"SQLite format 3\x00"


def read_annotations(path: str | Path) -> list[dict]:
    """The annotations in an annotations JSON file or a votes database."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected an annotations file or a votes database") from None
    if header == SQLITE_HEADER:
        from apprentice.annotate.store import load_annotations

        return load_annotations(path)
    data = read_json(path, "an AlpacaEval annotations list")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected an AlpacaEval annotations list, found a JSON {type(data).__name__}")
    return data


def tally_file(path: str | Path, model: str | None = None, seed: int = 0) -> dict:
    """`stats.summarize` of one file, with the file's name in the result and in any error."""
    annotations = read_annotations(path)
    try:
        return {"file": str(path), **summarize(annotations, model, seed)}
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _interval(pair: list[float] | None) -> str:
    return "-" if not pair else f"{100 * pair[0]:.1f}% to {100 * pair[1]:.1f}%"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_summary(summary: dict, console: Console | None = None) -> None:
    """Two plain tables: the overall comparison and the breakdown by dataset."""
    from rich.markup import escape

    console = console or Console()
    s = summary
    console.print(f"[bold]{escape(s['model'])}[/] vs {escape(s['opponent'])}  ({escape(s['file'])})")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("judged", f"{s['n']} ({s['failed']} failed judgments left out)"),
        ("wins / ties / losses", f"{s['wins']} / {s['ties']} / {s['losses']}"),
        ("win rate, ties half", _percent(s["win_rate"])),
        ("  95% CI, bootstrap", _interval(s["win_rate_ci"])),
        ("decisive share", f"{_percent(s['decisive_share'])} = wins / (wins + losses)"),
        ("  95% CI, Wilson", _interval(s["decisive_share_ci"])),
        ("sign test p", f"{_p(s['sign_test_p'])} (exact, two-sided, ties dropped)"),
        ("length-controlled", _percent(s["length_controlled_win_rate"])),
    ]
    if s["fractional"]:
        rows.insert(1, ("fractional preferences", f"{s['fractional']}, scored as they are (the win rate is the mean "
                                                  f"score); above 0.5 counts as a win, below as a loss"))
    for side, name in (("model", s["model"]), ("opponent", s["opponent"])):
        lengths = s["mean_length"][side]
        if lengths["chars"] is not None:
            rows.append((f"mean length, {name}", f"{lengths['chars']:.0f} chars, {lengths['words']:.0f} words"))
    if s["swap_checked"]:
        rows.append(("swap agreement", f"{_percent(s['swap_agreement'])} of {s['swap_checked']} pairs"))
    if s["position_verdicts"]:
        rows.append(("picked first-shown", f"{_percent(s['first_position_share'])} of "
                                            f"{s['position_verdicts']} decisive single-order verdicts"))
    if s["position_probs"]:
        rows.append(("first-shown probability", f"{_percent(s['first_position_prob'])} mean over "
                                                 f"{s['position_probs']} orders (50% = no lean)"))
    for label, value in rows:
        table.add_row(escape(label), escape(value))
    console.print(table)
    if s["by_dataset"]:
        datasets = Table(title="by dataset", title_justify="left")
        for column in ("dataset", "n", "wins", "ties", "losses", "win rate", "sign test p"):
            datasets.add_column(column, justify="left" if column == "dataset" else "right")
        for name, row in s["by_dataset"].items():
            datasets.add_row(name, str(row["n"]), str(row["wins"]), str(row["ties"]), str(row["losses"]),
                             _percent(row["win_rate"]), _p(row["sign_test_p"]))
        console.print(datasets)
