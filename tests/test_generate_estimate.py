"""`--estimate`: sends nothing and writes nothing; the assumed estimate follows the plan's request kinds, the
measured one the rates of the records a run already has. Against a scripted teacher on 127.0.0.1."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from servers import ScriptedServer
from test_generate_run import _cli, seeds_file, varied_teacher  # noqa: F401 (seeds_file is a fixture)

from apprentice.generate.config import GenerateConfig, resolve
from apprentice.generate.estimate import ACCEPTANCE, FILL, Measured, estimate_run, measured_basis
from apprentice.generate.run import generate
from apprentice.generate.seeds import load_seed_tasks


def test_estimate_sends_nothing_and_writes_nothing(tmp_path, seeds_file):  # noqa: F811
    out = tmp_path / "run"
    with ScriptedServer(varied_teacher(delay=0)) as server:
        proc = subprocess.run(_cli(server.url, out, seeds_file, 5000, "--price-in", "0.15", "--price-out", "0.6",
                                   "--estimate"), capture_output=True, text=True, timeout=60)
        assert server.count() == 0
    assert proc.returncode == 0, proc.stderr
    assert "estimate for the 5,000 records still missing" in proc.stdout and "assumed:" in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize("strategy, outputs, per_candidate", [
    ("self-instruct", "teacher", 1 / 8 + 1 + 1), ("self-instruct", "inline", 1 / 8 + 1),
    ("alpaca", "inline", 1 / 16), ("alpaca", "teacher", 1 / 16 + 1),
])
def test_the_assumed_estimate_counts_each_kind_of_request(tmp_path, seeds_file, strategy, outputs,  # noqa: F811
                                                          per_candidate):
    config = resolve(GenerateConfig(teacher="openai:m@http://127.0.0.1:9/v1", out=tmp_path / "run", num=1000,
                                    seeds=seeds_file, strategy=strategy, outputs=outputs, price_out=1.0))
    estimate = estimate_run(config, load_seed_tasks(seeds_file), None)
    assert estimate.requests == pytest.approx(tuple(1000 / a * per_candidate for a in ACCEPTANCE))
    low, expected, high = estimate.completion_tokens
    assert low < expected < high and expected / low == pytest.approx((FILL[1] / ACCEPTANCE[1]) /
                                                                       (FILL[0] / ACCEPTANCE[0]))
    assert estimate.cost_usd[1] == pytest.approx(expected / 1e6)  # only completion tokens have a price here


def test_the_measured_estimate_uses_the_runs_own_rates(tmp_path, seeds_file):  # noqa: F811
    out = tmp_path / "run"
    with ScriptedServer(varied_teacher(delay=0)) as server:
        generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=out, num=9, seeds=seeds_file,
                                concurrency=2))
        config = resolve(GenerateConfig(teacher=f"openai:other-url@{server.url}", out=out, num=36,
                                        seeds=seeds_file, price_in=1.0, price_out=1.0))
        sent = server.count()
    calls = sqlite3.connect(out / "requests.sqlite").execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert measured_basis(config, "openai:other-url") is None  # another model: nothing measured for it
    measured = measured_basis(config, "openai:scripted")
    assert measured == Measured(9, calls, 5 * calls, 7 * calls) and calls == sent
    estimate = estimate_run(config, load_seed_tasks(seeds_file), measured)
    assert estimate.missing == 27 and estimate.requests[1] == pytest.approx(calls * 3)
    assert estimate.cost_usd[1] == pytest.approx(calls * 3 * 12 / 1e6)
    assert estimate.requests[0] == pytest.approx(calls * 3 * (1 - 2 / 3)) and "measured" in estimate.basis


def test_run_estimate_prints_the_generate_estimate_and_sends_nothing(tmp_path):
    with ScriptedServer(varied_teacher(delay=0)) as server:
        config = tmp_path / "run.toml"
        config.write_text(f'[teacher]\nmodel = "openai:t@{server.url}"\n\n[generate]\nnum = 52000\nprice_in = 0.15\n'
                          f'price_out = 0.6\n\n[train]\nbase = "hf:{tmp_path}"\n')
        (tmp_path / "config.json").write_text("{}")
        proc = subprocess.run([sys.executable, "-m", "apprentice", "run", str(config), "--out", str(tmp_path / "r"),
                               "--estimate"], capture_output=True, text=True, timeout=60)
        assert server.count() == 0
    assert proc.returncode == 0, proc.stderr
    assert "estimate for the 52,000 records still missing" in proc.stdout and "cost (USD)" in proc.stdout
    assert not (tmp_path / "r").exists()
