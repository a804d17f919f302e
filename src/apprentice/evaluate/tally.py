"""Read judgments from files and show their statistics: the I/O around `stats.summarize`, `agreement` and
`controls` for `apprentice tally`.

    from apprentice.evaluate.tally import tally_file, print_summary, compare_files, print_comparison
    print_summary(tally_file("judgments.json"))
    print_comparison(compare_files("votes.sqlite", "judge/annotations.json"))   # tally --compare

A file is an AlpacaEval-style annotations JSON list (ours, or AlpacaEval's own, AlpacaEval 2's fractional
preferences included), the same annotations one per line in a `.jsonl` file (`apprentice annotate export`), or a
human-votes SQLite database written by `apprentice annotate` (recognised by its header bytes, not its name).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from apprentice.errors import UserError
from apprentice.evaluate.agreement import annotator_agreement, compare
from apprentice.evaluate.controls import control_summary
from apprentice.evaluate.outputs import read_json
from apprentice.evaluate.stats import summarize
from apprentice.jsonfile import parse_jsonl, read_text

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
    if path.suffix == ".jsonl":
        return [value for _, value in parse_jsonl(path, read_text(path))]
    data = read_json(path, "an AlpacaEval annotations list")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected an AlpacaEval annotations list, found a JSON {type(data).__name__}")
    return data


def tally_file(path: str | Path, model: str | None = None, seed: int = 0) -> dict:
    """`stats.summarize` of one file with the agreement between its annotators (`agreement.annotator_agreement`)
    and their accuracy on control pairs (None without controls), the file's name in the result and in any error."""
    annotations = read_annotations(path)
    try:
        return {"file": str(path), **summarize(annotations, model, seed),
                "agreement": annotator_agreement(annotations, seed), "controls": control_summary(annotations)}
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def compare_files(first: str | Path, second: str | Path) -> dict:
    """`agreement.compare` of two files (humans first, the judge second, say), with their names."""
    return {"first": str(first), "second": str(second),
            **compare(read_annotations(first), read_annotations(second), str(first), str(second))}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _interval(pair: list[float] | None) -> str:
    return "-" if not pair else f"{100 * pair[0]:.1f}% to {100 * pair[1]:.1f}%"


def _pair(pair: list[float] | None) -> str:
    return "-" if not pair else f"{pair[0]:.3f} to {pair[1]:.3f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _control_row(controls: dict) -> tuple[str, str]:
    verdict = (f"below {_percent(controls['threshold'])}: these verdicts are doubtful" if controls["flagged"]
               else "50% is chance")
    return "control accuracy", f"{_percent(controls['accuracy'])} of {controls['n']} control pairs ({verdict})"


def print_summary(summary: dict, console: Console | None = None) -> None:
    """Plain tables: the overall comparison, agreement between annotators and control accuracy per annotator when
    the file has them, and the breakdown by dataset."""
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
        *([_control_row(s["controls"])] if s.get("controls") else []),
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
    agreement = s.get("agreement")
    if agreement and agreement["n_items"]:
        fleiss = agreement["fleiss"]
        rows += [
            ("agreement", f"{agreement['n_items']} items with two or more votes, {agreement['annotators']} annotators"),
            ("  Krippendorff's alpha", f"{_number(agreement['alpha'])} (nominal; 95% CI, bootstrap over items: "
                                       f"{_pair(agreement['alpha_ci'])})"),
            ("  Fleiss' kappa", f"{_number(fleiss['kappa'])} over the {fleiss['n_items']} items with "
                                f"{fleiss['votes_per_item']} votes"),
            ("  pairwise agreement", f"{_percent(agreement['pairwise_agreement'])} of {agreement['pairs']} pairs "
                                     f"of votes on the same item"),
        ]
    for label, value in rows:
        table.add_row(escape(label), escape(value))
    console.print(table)
    _print_annotators(s, console)
    if s["by_dataset"]:
        datasets = Table(title="by dataset", title_justify="left")
        for column in ("dataset", "n", "wins", "ties", "losses", "win rate", "sign test p"):
            datasets.add_column(column, justify="left" if column == "dataset" else "right")
        for name, row in s["by_dataset"].items():
            datasets.add_row(name, str(row["n"]), str(row["wins"]), str(row["ties"]), str(row["losses"]),
                             _percent(row["win_rate"]), _p(row["sign_test_p"]))
        console.print(datasets)


def _print_annotators(summary: dict, console: Console) -> None:
    """Per annotator, when there is more than one or any control: agreement with the others, ties, first side,
    controls."""
    from rich.markup import escape

    rows = (summary.get("agreement") or {}).get("by_annotator", {})
    controls = (summary.get("controls") or {}).get("by_annotator", {})
    names = sorted(set(rows) | set(controls))
    if len(names) < 2 and not controls:
        return
    table = Table(title="by annotator", title_justify="left")
    for column in ("annotator", "votes", "agrees with others", "ties", "picked first-shown", "controls right", ""):
        table.add_column(column, justify="left" if column in ("annotator", "") else "right")
    for name in names:
        row, control = rows.get(name) or {}, controls.get(name)
        table.add_row(
            escape(name), str(row.get("votes", 0)),
            f"{_percent(row.get('agreement_with_others'))} of {row.get('shared_items', 0)}",
            _percent(row.get("tie_rate")),
            f"{_percent(row.get('first_position_rate'))} of {row.get('decisive_with_side', 0)}",
            f"{_percent(control['accuracy'])} of {control['n']}" if control else "-",
            f"[bold red]below {_percent(summary['controls']['threshold'])}[/]" if control and control["flagged"]
            else "")
    console.print(table)


def print_comparison(result: dict, console: Console | None = None) -> None:
    """Agreement of two files on the pairs both judged, and their confusion table."""
    from rich.markup import escape

    console = console or Console()
    r = result
    console.print(f"[bold]{escape(r['first'])}[/] against [bold]{escape(r['second'])}[/]: {r['pairs']} pairs of "
                  f"judgments on {r['instructions']} instructions")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("agreement, ties counted", _percent(r["agreement"]))
    table.add_row("agreement where both picked a winner", f"{_percent(r['decisive_agreement'])} of {r['decisive']}")
    table.add_row("Cohen's kappa (A, B, tie)", _number(r["cohen_kappa"]))
    console.print(table)
    confusion = Table(title=f"rows: {escape(r['first'])}, columns: {escape(r['second'])}", title_justify="left")
    confusion.add_column("")
    for name in r["labels"]:
        confusion.add_column(name, justify="right")
    for name, counts in zip(r["labels"], r["confusion"], strict=True):
        confusion.add_row(name, *map(str, counts))
    console.print(confusion)
