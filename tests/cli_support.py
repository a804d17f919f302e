"""Run the `apprentice` command line inside the test process (fast, and capsys sees its stderr)."""

from __future__ import annotations

import sys


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of `apprentice ARGS...` run through `cli.main`, as the console script runs it."""
    from apprentice import cli

    old = sys.argv
    sys.argv = ["apprentice", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().err
