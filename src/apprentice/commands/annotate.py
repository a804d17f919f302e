"""`apprentice annotate`: collect blind human votes on two models' outputs in a small web app.

    apprentice annotate --a student.json --b teacher.json --db votes.sqlite     # import the pairs and serve
    apprentice annotate --a student.json --b teacher.json --db votes.sqlite --controls 10   # with control items
    apprentice annotate invite ana --db votes.sqlite --url http://HOST:8000    # print ana's link
    apprentice annotate admin-token --db votes.sqlite                          # print a new admin link
    apprentice annotate export --db votes.sqlite --out annotations.json        # AlpacaEval-style annotations
    apprentice annotate export --db votes.sqlite --out votes.jsonl --anonymous  # one vote per line, no names
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import typer
from rich.console import Console

from apprentice.errors import UserError

console = Console()
annotate_app = typer.Typer(
    help="Blind human votes in the browser. With --a, --b and --db: import the pairs (joined on the instruction) "
    "and serve the voting app; restarting on the same files and database resumes. Subcommands invite annotators, "
    "make admin links and export the votes.",
    no_args_is_help=False,
)
DB_HELP = "The votes database (SQLite; created on first use)."
URL_HELP = "Where annotators reach the server (the address printed in links)."


@annotate_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    a: Path = typer.Option(None, "--a", help="AlpacaEval outputs of model A (exported as output_1)."),
    b: Path = typer.Option(None, "--b", help="AlpacaEval outputs of model B (exported as output_2)."),
    db: Path = typer.Option(None, "--db", help=DB_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 to accept other machines)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    votes_per_item: int = typer.Option(1, min=1, help="Votes wanted per item, each from a different annotator."),
    controls: int = typer.Option(None, min=0, help="Control items to mix in, made once when the database is created "
                                                   "(a real answer against another instruction's answer or its own "
                                                   "first sentence), shown to every annotator and never counted in "
                                                   "the win rate; default: what the database has (0 for a new one)."),
) -> None:
    """Serve the voting app on the pairs of --a and --b (joined on the instruction); restarts resume."""
    if ctx.invoked_subcommand is not None:
        return
    if a is None or b is None or db is None:
        raise UserError("annotate needs --a FILE --b FILE --db FILE (or a subcommand: invite, admin-token, export)")
    from apprentice.annotate import server, store
    from apprentice.evaluate.outputs import join_outputs, load_outputs

    pairs = join_outputs(load_outputs(a), load_outputs(b), str(a), str(b))
    connection = store.create_db(db)
    added = store.import_pairs(connection, pairs, controls)
    console.print(f"{db}: {added} new items" if added else f"{db}: resuming with {len(pairs)} items")
    if store.control_count(connection):
        console.print(f"{store.control_count(connection)} control items, shown to every annotator")
    # 0.0.0.0 is where to listen, not an address a browser can open; this machine's loopback is
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if not store.has_admin(connection):
        console.print(f"admin page: {base}/a/{store.add_admin(connection)}", soft_wrap=True)
    else:
        console.print(f"admin page: run `apprentice annotate admin-token --db {db}` for a new link", soft_wrap=True)
    connection.close()
    console.print(f"invite annotators from the admin page or with `apprentice annotate invite NAME --db {db}`")
    console.print(f"serving at http://{host}:{port} (Ctrl-C stops)")
    server.serve(db, host, port, votes_per_item)


def _existing_db(db: Path) -> sqlite3.Connection:
    from apprentice.annotate import store

    if not db.is_file():
        raise UserError(f"{db}: no such votes database (start `apprentice annotate --a --b --db {db}` first)")
    return store.create_db(db)


@annotate_app.command()
def invite(
    name: str = typer.Argument(..., help="The annotator's name (shown in exports and on the admin page)."),
    db: Path = typer.Option(..., "--db", help=DB_HELP),
    url: str = typer.Option("http://127.0.0.1:8000", help=URL_HELP),
) -> None:
    """Create an annotator and print their private link (only a hash of it is stored)."""
    from apprentice.annotate import store

    connection = _existing_db(db)
    try:
        token = store.add_annotator(connection, name)
    finally:
        connection.close()
    typer.echo(f"{url.rstrip('/')}/a/{token}")


@annotate_app.command("admin-token")
def admin_token(
    db: Path = typer.Option(..., "--db", help=DB_HELP),
    url: str = typer.Option("http://127.0.0.1:8000", help=URL_HELP),
) -> None:
    """Create an admin link: progress, tally with plot, export, invitations."""
    from apprentice.annotate import store

    connection = _existing_db(db)
    try:
        token = store.add_admin(connection)
    finally:
        connection.close()
    typer.echo(f"{url.rstrip('/')}/a/{token}")


@annotate_app.command()
def export(
    db: Path = typer.Option(..., "--db", help=DB_HELP),
    out: Path = typer.Option(..., "--out", help="Where to write the votes: OUT.jsonl one per line, anything else "
                                                "one AlpacaEval annotations JSON list; `apprentice tally` reads both."),
    anonymous: bool = typer.Option(False, "--anonymous", help="Put each annotator's pseudonym (annotator_id) in "
                                                              "place of their name, for sharing the file."),
) -> None:
    """Write every vote as an AlpacaEval annotation (output_1 = A, preference 1, 2, or 1.5 for a tie) with its
    annotator's pseudonym, the side shown first, the seconds to vote, time stamps and whether it was a control."""
    from apprentice.annotate import store

    from apprentice.jsonfile import write_json_atomic, write_text_atomic

    annotations = store.load_annotations(db)
    if anonymous:
        annotations = [{**a, "annotator": a["annotator_id"]} for a in annotations]
    if out.suffix == ".jsonl":
        write_text_atomic(out, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in annotations))
    else:
        write_json_atomic(out, annotations)
    console.print(f"{out}: {len(annotations)} annotations")


def register(app: typer.Typer) -> None:
    app.add_typer(annotate_app, name="annotate")
