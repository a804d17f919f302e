"""`--max-cost`: the cap is never passed, even with requests in flight; when it binds the run stops with what it
kept and a rerun with a higher cap goes on to the same data an uncapped run makes. Against a scripted teacher on
127.0.0.1 that reports usage, and on the pure `Budget`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from servers import ScriptedServer
from test_generate_run import _cli, _data, seeds_file, varied_teacher  # noqa: F401 (seeds_file is a fixture)

from apprentice.generate.budget import TOKENS_PER_MESSAGE, Budget, worst_case_tokens
from apprentice.generate.config import GenerateConfig
from apprentice.generate.run import generate
from apprentice.models.base import Request

# the scripted teacher bills 5 prompt + 7 completion tokens per answer: $0.012 at $1,000 per million tokens
PRICE = 1000.0
PER_ANSWER = 12 * PRICE / 1e6


def test_worst_case_bounds_the_prompt_by_its_bytes_and_the_answer_by_max_tokens():
    chat = Request(messages=({"role": "user", "content": "héllo"},), max_tokens=40)
    assert worst_case_tokens(chat) == (6 + TOKENS_PER_MESSAGE, 40)
    assert worst_case_tokens(Request(prompt="abc", max_tokens=3)) == (3 + TOKENS_PER_MESSAGE, 3)


def test_budget_admits_while_paid_plus_reserved_stays_within_the_cap():
    request = Request(prompt="x" * (100 - TOKENS_PER_MESSAGE), max_tokens=100)  # worst case 200 tokens
    budget = Budget(cap=1.0, price_in=1000.0, price_out=1000.0, paid_before=0.5)  # 200 tokens cost $0.2
    assert budget.admit(1, request, cached=False, paid_now=0.0)
    assert budget.admit(2, request, cached=False, paid_now=0.05)
    assert not budget.admit(3, request, cached=False, paid_now=0.05)  # 0.5 + 0.05 + 0.4 + 0.2 > 1
    assert budget.admit(3, request, cached=True, paid_now=0.05)  # an answer the record holds costs nothing
    budget.release(1)
    assert budget.admit(4, request, cached=False, paid_now=0.1)


def test_the_cap_is_never_passed_and_a_higher_cap_goes_on_to_the_same_data(tmp_path, seeds_file):  # noqa: F811
    with ScriptedServer(varied_teacher(delay=0)) as server:
        teacher = f"openai:scripted@{server.url}"
        whole = generate(GenerateConfig(teacher=teacher, out=tmp_path / "whole", num=30, seeds=seeds_file,
                                        concurrency=4, price_in=PRICE, price_out=PRICE))
        assert whole.status == "done"
        uncapped_cost = whole.stats.cost_usd

        out = tmp_path / "capped"
        cap = 1.5  # a bootstrap request's worst case is $1.24 here: it fits only while $0.26 or less is paid
        paid_before = server.count()
        capped = generate(GenerateConfig(teacher=teacher, out=out, num=30, seeds=seeds_file, concurrency=4,
                                         price_in=PRICE, price_out=PRICE, max_cost=cap, cache=out / "calls.sqlite"))
        sent = server.count() - paid_before
        assert capped.status == "cost_capped" and 0 < len(_data(out)) < 30
        assert sent * PER_ANSWER <= cap and capped.paid_usd == pytest.approx(sent * PER_ANSWER)
        assert capped.paid_usd < uncapped_cost  # it really stopped early

        proc = subprocess.run(_cli(server.url, out, seeds_file, 30, "--price-in", str(PRICE), "--price-out",
                                   str(PRICE), "--max-cost", str(cap), "--cache", str(out / "calls.sqlite")),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "the next request could pass --max-cost $1.5" in proc.stdout
        assert server.count() - paid_before == sent  # the same cap again: nothing more is paid

        more = generate(GenerateConfig(teacher=teacher, out=out, num=30, seeds=seeds_file, concurrency=4,
                                       price_in=PRICE, price_out=PRICE, max_cost=100.0, cache=out / "calls.sqlite"))
    assert more.status == "done" and _data(out) == _data(tmp_path / "whole")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 30


def test_max_cost_needs_prices(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "apprentice", "generate", "--teacher", "openai:m@http://127.0.0.1:9/v1",
                           "--num", "2", "--out", str(tmp_path / "run"), "--max-cost", "5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--max-cost needs the teacher's prices" in proc.stderr
    assert not (tmp_path / "run").exists()
