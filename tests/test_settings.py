"""Settings declared once: a command's options, a run config's keys and a stage's key all come from the dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import typer
from typer.testing import CliRunner

from apprentice.errors import UserError
from apprentice.settings import check_settings, command, output_values, setting, toml_names


@dataclass
class Limits:
    low: int = setting(1, "Lowest.", min=0)
    high: float | None = setting(None, "Highest.", unit="USD")


@dataclass
class Example:
    name: str = setting(help="Who.", short="-n")
    out: str | None = setting(None, "Where.", required=True, toml=False)
    loud: bool = setting(False, "Shout.")
    quiet: bool = setting(True, "Whisper.")
    every: int = setting(10, "How often.", output=False, flag="--how-often")
    launch: str | None = setting(None, "Run config only.", cli=False)
    limits: Limits = field(default_factory=Limits)


def run_command(args: list[str]) -> tuple[int, object]:
    seen = []
    app = typer.Typer()
    app.command("ex")(command(Example, lambda config, dry: seen.append((config, dry)), doc="An example.",
                          extra={"dry": (bool, typer.Option(False, "--dry", help="Do nothing."))}))
    app.command("other")(lambda: None)  # two commands, so the first is called by name
    result = CliRunner().invoke(app, ["ex", *args])
    return result.exit_code, (seen[0] if seen else result.output)


def test_the_command_line_is_the_dataclass():
    code, (config, dry) = run_command(["-n", "x", "--out", "o", "--loud", "--no-quiet", "--how-often", "3",
                                       "--low", "2", "--high", "1.5", "--dry"])
    assert code == 0 and dry is True
    assert config == Example(name="x", out="o", loud=True, quiet=False, every=3, limits=Limits(low=2, high=1.5))
    code, (config, dry) = run_command(["--name", "x", "--out", "o"])
    assert config == Example(name="x", out="o") and dry is False


@pytest.mark.parametrize("args", [["--out", "o"], ["--name", "x"], ["--name", "x", "--out", "o", "--low", "-1"],
                                  ["--name", "x", "--out", "o", "--launch", "y"]])
def test_missing_required_out_of_bounds_and_run_config_only_options_are_refused(args):
    code, _ = run_command(args)
    assert code == 2


def test_run_config_keys_and_the_stage_key():
    assert toml_names(Example) == {"name", "loud", "quiet", "every", "launch", "limits"}
    values = output_values(Example(name="x", out="o"))
    assert values == {"name": "x", "loud": False, "quiet": True, "launch": None, "limits": {"low": 1, "high": None}}


def test_check_settings_names_the_option():
    with pytest.raises(UserError, match="--low must be at least 0, got -3"):
        check_settings(Example(name="x", limits=Limits(low=-3)))
