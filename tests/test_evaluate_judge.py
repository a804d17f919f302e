"""The LLM judge end to end against real HTTP servers: a scripted judge whose verdict depends on the order the
outputs are shown in (swap rule, position bias), garbage answers (strict retry, then a failed judgment), identical
outputs (no call), log-probabilities (the verdict, and the probability preference whose position lean cancels), the
response cache (a rerun makes no request), the CLI with AlpacaEval 2's fractional files, and `apprentice serve` over
a tiny model."""

import json
import math
import subprocess
import sys

import pytest
from servers import ScriptedServer, ServeProcess, chat_reply

from apprentice.evaluate.judge import judge_pairs, judge_request, load_prompt
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.stats import summarize
from apprentice.models import load_model
from apprentice.models.record import RecordedModel


def shown(body: dict) -> tuple[str, str, bool]:
    """(first output, second output, strict?) as the judge saw them in the request."""
    prompt = body["messages"][0]["content"]
    first = prompt.split("### Response A\n", 1)[1].split("\n\n### Response B\n", 1)[0]
    second = prompt.split("### Response B\n", 1)[1].split("\n\n### ", 1)[0]
    return first, second, "Your reply (A, B or tie)" in prompt


def always_first(path, body):
    return chat_reply("A")


def with_logprobs(reply, probabilities: dict[str, float]):
    """`reply` with first-token top log-probabilities, as an OpenAI-compatible server sends them."""
    top = [{"token": token, "logprob": math.log(p)} for token, p in probabilities.items()]
    reply.body["choices"][0]["logprobs"] = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                         "top_logprobs": top}]}
    return reply


def leans_first(path, body):
    """A judge that reads positions only: 90% on whichever output it is shown first, whatever they say."""
    return with_logprobs(chat_reply("A"), {"A": 0.9, "B": 0.1})


def leans_first_but_reads(path, body):
    """A position-biased judge whose probabilities also follow the content: the output marked GOOD gets 0.8 shown
    first and 0.6 shown second; unmarked pairs get the bare lean, 0.7 on the first."""
    first, second, _ = shown(body)
    p_first = 0.8 if "GOOD" in first else 0.4 if "GOOD" in second else 0.7
    return with_logprobs(chat_reply("A" if p_first > 0.5 else "B"), {"A": p_first, "B": 1 - p_first})


def prefers_marker(path, body):
    """A consistent judge: whichever output says GOOD wins, wherever it is shown, in varied phrasings."""
    first, second, _ = shown(body)
    if "GOOD" in first:
        return chat_reply("[[A]]")
    return chat_reply("After careful thought, Response B is better." if "GOOD" in second else "Both are equally good.")


def pairs(*outputs: tuple[str, str]) -> list[Pair]:
    return [Pair(f"instruction {i}", a, b, "alpha", "beta", "set1" if i % 2 else "set2")
            for i, (a, b) in enumerate(outputs)]


def judge_model(server, tmp_path, name="judge"):
    return RecordedModel(load_model(f"openai:{name}@{server.url}"), tmp_path / "cache.sqlite")


def test_a_judge_that_always_picks_the_first_gives_ties_and_shows_its_bias(tmp_path):
    with ScriptedServer(always_first) as server:
        result = judge_pairs(pairs(("a0", "b0"), ("a1", "b1"), ("a2", "b2")), judge_model(server, tmp_path))
        assert server.count("/chat/completions") == 6
    assert [r["preference"] for r in result] == [1.5, 1.5, 1.5]
    assert all(r["swap_agreement"] is False for r in result)
    assert all(r["preference_from"] == "verdicts" for r in result)  # no log-probabilities: hard verdicts, as before
    first, second = result[0]["orders"]
    assert (first["shown_first"], first["verdict"], first["preference"], first["p_output_2"]) == (1, "A", 1.0, None)
    assert (second["shown_first"], second["verdict"], second["preference"], second["p_output_2"]) == (2, "A", 2.0, None)
    summary = summarize(result)
    assert (summary["swap_agreement"], summary["first_position_share"], summary["position_verdicts"]) == (0.0, 1.0, 6)
    assert (summary["first_position_prob"], summary["position_probs"], summary["fractional"]) == (None, 0, 0)


def test_a_probability_judge_that_reads_positions_only_gives_exact_ties(tmp_path):
    with ScriptedServer(leans_first) as server:
        result = judge_pairs(pairs(("a0", "b0"), ("a1", "b1"), ("a2", "b2")), judge_model(server, tmp_path))
    assert [r["preference"] for r in result] == [1.5, 1.5, 1.5]  # exactly: the lean cancels, it is not a win
    assert all(r["preference_from"] == "logprobs" and r["swap_agreement"] is False for r in result)
    first, second = result[0]["orders"]
    assert (first["shown_first"], first["verdict"], first["preference"]) == (1, "A", 1.0)
    assert (second["shown_first"], second["verdict"], second["preference"]) == (2, "A", 2.0)
    assert (first["p_output_2"], second["p_output_2"]) == (pytest.approx(0.1), pytest.approx(0.9))
    summary = summarize(result)
    assert (summary["win_rate"], summary["wins"], summary["ties"], summary["losses"]) == (0.5, 0, 3, 0)
    assert summary["first_position_prob"] == pytest.approx(0.9) and summary["position_probs"] == 6
    assert summary["first_position_share"] == 1.0


def test_a_probability_judge_that_follows_the_content_moves_the_preference(tmp_path):
    data = pairs(("a0", "GOOD b0"), ("a1", "GOOD b1"), ("GOOD a2", "b2"), ("a3", "b3"))
    with ScriptedServer(leans_first_but_reads) as server:
        result = judge_pairs(data, judge_model(server, tmp_path))
    # B GOOD: P(B file) is 0.6 shown second and 0.8 shown first, mean 0.7; A GOOD the mirror; unmarked 0.3 and 0.7
    assert [r["preference"] for r in result] == pytest.approx([1.7, 1.7, 1.3, 1.5])
    assert [r["swap_agreement"] for r in result] == [True, True, True, False]
    assert [[o["p_output_2"] for o in r["orders"]] for r in result[:2]] == [pytest.approx([0.6, 0.8])] * 2
    summary = summarize(result)
    assert summary["model"] == "beta" and summary["win_rate"] == pytest.approx((0.7 + 0.7 + 0.3 + 0.5) / 4)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["fractional"]) == (2, 1, 1, 3)
    assert summary["first_position_prob"] == pytest.approx((0.4 + 0.8) * 3 / 8 + 0.7 * 2 / 8)
    all_good_b = summarize(result[:2])
    assert all_good_b["win_rate"] == pytest.approx(0.7) and all_good_b["wins"] == 2


def test_probabilities_count_only_when_every_order_has_them(tmp_path):
    def handler(path, body):
        first, second, _ = shown(body)
        if first.startswith("a"):  # A shown first: probabilities; B shown first: text only
            return with_logprobs(chat_reply("B"), {"A": 0.45, "B": 0.55})
        return chat_reply("A")

    with ScriptedServer(handler) as server:
        [result] = judge_pairs(pairs(("a0", "b0")), judge_model(server, tmp_path))
    assert (result["preference"], result["preference_from"], result["swap_agreement"]) == (2.0, "verdicts", True)
    assert [o["p_output_2"] for o in result["orders"]] == [pytest.approx(0.55), None]


def test_one_order_with_probabilities_is_that_order_s_probability(tmp_path):
    data = pairs(*[(f"a{i}", f"GOOD b{i}") for i in range(6)])
    with ScriptedServer(leans_first_but_reads) as server:
        result = judge_pairs(data, judge_model(server, tmp_path), orders=1, seed=0)
    for item in result:
        [order] = item["orders"]
        assert item["preference"] == pytest.approx(1.8 if order["shown_first"] == 2 else 1.6)
        assert item["preference_from"] == "logprobs" and item["swap_agreement"] is None
    assert {item["orders"][0]["shown_first"] for item in result} == {1, 2}


def test_a_probability_without_a_verdict_is_retried_then_used(tmp_path):
    def handler(path, body):  # the first token is never a label, but some mass sits on A and B
        return with_logprobs(chat_reply("The first"), {"The": 0.9, "A": 0.02, "B": 0.06})

    with ScriptedServer(handler) as server:
        [result] = judge_pairs(pairs(("a0", "b0")), judge_model(server, tmp_path))
        assert server.count() == 4  # both orders asked again strictly, for want of a verdict
    assert (result["preference_from"], result["failure"], result["swap_agreement"]) == ("logprobs", None, None)
    assert result["preference"] == pytest.approx(1.5)  # 0.75 for B shown second, 0.25 for B shown first
    assert [o["verdict"] for o in result["orders"]] == [None, None]
    assert all(len(o["texts"]) == 2 for o in result["orders"])


def test_a_consistent_judge_gives_consistent_wins(tmp_path):
    data = pairs(("a0", "GOOD b0"), ("GOOD a1", "b1"), ("a2", "GOOD b2"), ("a3", "b3"))
    with ScriptedServer(prefers_marker) as server:
        result = judge_pairs(data, judge_model(server, tmp_path), annotator="the-judge")
    assert [r["preference"] for r in result] == [2.0, 1.0, 2.0, 1.5]
    assert [r["swap_agreement"] for r in result] == [True, True, True, True]
    assert result[0] | {"orders": None} == {
        "instruction": "instruction 0", "output_1": "a0", "generator_1": "alpha", "output_2": "GOOD b0",
        "generator_2": "beta", "annotator": "the-judge", "preference": 2.0, "preference_from": "verdicts",
        "dataset": "set2", "swap_agreement": True, "failure": None, "orders": None}
    assert result[0]["orders"][0]["texts"] == ["After careful thought, Response B is better."]
    assert result[0]["orders"][1]["texts"] == ["[[A]]"]
    summary = summarize(result)
    assert (summary["model"], summary["wins"], summary["losses"], summary["ties"]) == ("beta", 2, 1, 1)
    assert summary["first_position_share"] == 0.5


def test_judge_requests_are_greedy_short_and_ask_for_logprobs(tmp_path):
    with ScriptedServer(always_first) as server:
        judge_pairs(pairs(("a", "b")), judge_model(server, tmp_path), max_tokens=9)
        path, body = server.requests[0]
    assert path.endswith("/chat/completions")
    assert (body["temperature"], body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (0.0, 9, True, 5)
    # both orders are in flight together, so they may arrive in either order
    assert sorted(shown(request) for _, request in server.requests) == [("a", "b", False), ("b", "a", False)]


def test_one_order_is_seeded_and_the_swap_undone(tmp_path):
    data = pairs(*[(f"GOOD a{i}", f"b{i}") if i % 3 else (f"a{i}", f"GOOD b{i}") for i in range(12)])
    expected = [1.0 if i % 3 else 2.0 for i in range(12)]
    with ScriptedServer(prefers_marker) as server:
        first = judge_pairs(data, judge_model(server, tmp_path / "1"), orders=1, seed=0)
        assert server.count() == 12
        again = judge_pairs(data, judge_model(server, tmp_path / "2"), orders=1, seed=0)
        other = judge_pairs(data, judge_model(server, tmp_path / "3"), orders=1, seed=1)
    for result in (first, again, other):
        assert [r["preference"] for r in result] == expected
        assert all(r["swap_agreement"] is None and len(r["orders"]) == 1 for r in result)
    sides = [r["orders"][0]["shown_first"] for r in first]
    assert set(sides) == {1, 2}
    assert sides == [r["orders"][0]["shown_first"] for r in again]
    assert sides != [r["orders"][0]["shown_first"] for r in other]


def test_garbage_is_retried_strictly_once_then_fails(tmp_path):
    def handler(path, body):
        first, second, strict = shown(body)
        if strict and "rescued" in first + second:
            return chat_reply("B")
        return chat_reply("I like turtles.")

    progress = []
    with ScriptedServer(handler) as server:
        result = judge_pairs(pairs(("a0", "b0"), ("rescued a", "b1")), judge_model(server, tmp_path),
                             progress=lambda done, planned: progress.append((done, planned)))
        assert server.count() == 8  # 2 pairs x 2 orders, every one retried once
    failed, rescued = result
    assert failed["preference"] is None
    assert failed["failure"] == "no verdict after a strict retry (A first, B first)"
    assert failed["orders"][0]["texts"] == ["I like turtles.", "I like turtles."]
    assert rescued["preference"] == 1.5  # B shown second, then B shown first: the orders disagree
    assert rescued["swap_agreement"] is False
    assert [o["preference"] for o in rescued["orders"]] == [2.0, 1.0]
    assert progress[0] == (0, 4) and progress[-1] == (8, 8)
    summary = summarize(result)
    assert (summary["n"], summary["failed"]) == (1, 1)


def test_identical_outputs_are_a_tie_without_a_call(tmp_path):
    with ScriptedServer(prefers_marker) as server:
        result = judge_pairs(pairs(("same", "same"), ("x", "GOOD"), (" same\n", "same")),
                             judge_model(server, tmp_path))
        assert server.count() == 2
    assert [r["preference"] for r in result] == [1.5, 2.0, 1.5]
    assert result[0]["orders"] == [] and result[0]["swap_agreement"] is None
    assert [r["preference_from"] for r in result] == ["identical", "verdicts", "identical"]


def test_verdict_from_logprobs_when_the_text_has_none(tmp_path):
    def handler(path, body):
        first, _, _ = shown(body)
        return with_logprobs(chat_reply("The"), {"B": 0.1, "A": 0.8} if first == "x" else {"B": 0.8, "A": 0.1})

    with ScriptedServer(handler) as server:
        [result] = judge_pairs(pairs(("x", "y")), judge_model(server, tmp_path))
    assert [(o["verdict"], o["verdict_from"]) for o in result["orders"]] == [("A", "logprobs"), ("B", "logprobs")]
    assert [o["preference"] for o in result["orders"]] == [1.0, 1.0] and result["swap_agreement"] is True
    assert result["preference"] == pytest.approx(1 + 1 / 9) and result["preference_from"] == "logprobs"


def test_prompts_load_and_hold_the_outputs():
    for name in ("judge_prompt.txt", "judge_prompt_strict.txt"):
        assert {"{instruction}", "{first}", "{second}"} <= {p for p in ("{instruction}", "{first}", "{second}")
                                                            if p in load_prompt(name)}
    request = judge_request(Pair("Do {this}", "out {a}", "out b", "x", "y"), swapped=True, strict=True)
    assert shown(request.to_json()) == ("out b", "out {a}", True)
    assert "Do {this}" in request.messages[0]["content"]


# --------------------------------------------------------------------------------------------------- command line

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", *args], capture_output=True, text=True, timeout=120)


def write_outputs(path, generator, outputs: dict[str, str]):
    path.write_text(json.dumps([{"instruction": i, "output": o, "generator": generator, "dataset": "d"}
                                for i, o in outputs.items()]))
    return path


def test_cli_judge_then_rerun_from_the_cache_then_tally(tmp_path):
    a = write_outputs(tmp_path / "a.json", "student", {"q1": "GOOD 1", "q2": "a2", "q3": "a3", "q4": "same"})
    b = write_outputs(tmp_path / "b.json", "teacher", {"q4": "same", "q3": "GOOD 3", "q2": "GOOD 2", "q1": "b1"})
    out = tmp_path / "j.json"
    with ScriptedServer(prefers_marker) as server:
        args = ("judge", "--a", str(a), "--b", str(b), "--judge", f"openai:judge@{server.url}", "--out", str(out))
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr
        assert server.count() == 6
        written = out.read_text()
        rerun = run_cli(*args)
        assert rerun.returncode == 0, rerun.stderr
        assert server.count() == 6  # every answer came from the cache
    assert out.read_text() == written
    assert (tmp_path / "j.cache.sqlite").is_file()
    assert "0 judge calls, 6 from the cache" in " ".join(rerun.stdout.split())
    annotations = json.loads(written)
    assert [a["preference"] for a in annotations] == [1.0, 2.0, 2.0, 1.5]
    assert annotations[0]["annotator"] == f"openai:judge@{server.url}"

    tally = run_cli("tally", str(out), "--json")
    assert tally.returncode == 0, tally.stderr
    [summary] = json.loads(tally.stdout)
    assert (summary["model"], summary["opponent"], summary["wins"], summary["ties"], summary["losses"]) == (
        "teacher", "student", 2, 1, 1)
    assert summary["swap_agreement"] == 1.0
    table = run_cli("tally", str(out), "--model", "student")
    assert table.returncode == 0 and "student vs teacher" in table.stdout
    assert "1 / 1 / 2" in table.stdout and "37.50%" in table.stdout


def test_cli_mismatched_files_fail_in_one_line_and_write_nothing(tmp_path):
    a = write_outputs(tmp_path / "a.json", "s", {"q1": "x", "q2": "y"})
    b = write_outputs(tmp_path / "b.json", "t", {"q1": "x", "q3": "z"})
    result = run_cli("judge", "--a", str(a), "--b", str(b), "--judge", "openai:judge@http://127.0.0.1:9",
                     "--out", str(tmp_path / "j.json"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "1 only in" in result.stderr and "1 in both" in result.stderr
    assert not (tmp_path / "j.json").exists() and not (tmp_path / "j.cache.sqlite").exists()


@pytest.mark.parametrize("content, message", [
    ("[1, 2", "not JSON"),
    ('{"a": 1}', "expected an AlpacaEval annotations list"),
    ('[{"output_1": "a", "output_2": "b", "preference": 3}]', "item 0: preference 3 is not"),
    ('[{"output_1": "a", "output_2": "b", "preference": 1.2}, {"output_1": "a", "output_2": "b", "preference": 2.5}]',
     "item 1: preference 2.5 is not a number from 1 to 2"),
    ('[{"output_1": "a", "output_2": "b", "preference": -1}]', "item 0: preference -1 is not"),
    ('[{"output_1": "a", "output_2": "b", "preference": "x"}]', "item 0: preference 'x' is not"),
])
def test_cli_tally_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = run_cli("tally", str(path))
    assert result.returncode == 2
    assert message in result.stderr and str(path) in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_cli_tally_of_an_alpaca_eval_2_file(tmp_path):
    preferences = [1.8444, 1.0, 1.2, 1.5, "1.9"]
    path = tmp_path / "weighted_alpaca_eval_gpt4_turbo.annotations.json"
    path.write_text(json.dumps([
        {"instruction": f"q{i}", "output_1": "reference answer", "generator_1": "gpt4_1106_preview",
         "output_2": "model answer " * (i + 1), "generator_2": "student",
         "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": p, "dataset": "helpful_base"}
        for i, p in enumerate(preferences)]))
    result = run_cli("tally", str(path), "--json")
    assert result.returncode == 0, result.stderr
    [summary] = json.loads(result.stdout)
    assert summary["win_rate"] == pytest.approx((0.8444 + 0 + 0.2 + 0.5 + 0.9) / 5)
    assert (summary["model"], summary["wins"], summary["ties"], summary["losses"]) == ("student", 2, 1, 2)
    assert (summary["fractional"], summary["sign_test_p"]) == (3, 1.0)
    table = run_cli("tally", str(path))
    assert table.returncode == 0, table.stderr
    assert "fractional preferences" in table.stdout and "48.89%" in table.stdout


def test_tally_reads_a_votes_database(tmp_path):
    from apprentice.annotate import store
    from apprentice.evaluate.tally import tally_file

    db_path = tmp_path / "votes.sqlite"
    db = store.create_db(db_path)
    store.import_pairs(db, pairs(("a0", "b0"), ("a1", "b1"), ("a2", "b2")))
    store.add_annotator(db, "ana")
    annotator = db.execute("SELECT id FROM annotators").fetchone()[0]
    votes = {"a0": "A", "a1": "B", "a2": "B"}
    while (item := store.next_item(db, annotator, votes_per_item=1)) is not None:
        want = votes[item.left if item.left.startswith("a") else item.right]
        side = "left" if (want == "A") == item.left.startswith("a") else "right"
        store.record_vote(db, annotator, item.item_id, side, "", votes_per_item=1)
        store.advance(db, annotator, item.item_id)
    db.close()
    summary = tally_file(db_path)
    assert (summary["model"], summary["wins"], summary["losses"], summary["ties"]) == ("beta", 2, 1, 0)


def test_judge_against_apprentice_serve_over_a_tiny_model(tiny_model_dir, tmp_path):
    data = pairs(("Paris is the capital.", "It is Lyon."), ("Two plus two is four.", "Five."))
    with ServeProcess(f"hf:{tiny_model_dir}", "--name", "tiny") as serve:
        model = judge_model(serve, tmp_path, "tiny")
        result = judge_pairs(data, model, max_tokens=4)
        rerun = judge_model(serve, tmp_path, "tiny")
        again = judge_pairs(data, rerun, max_tokens=4)
    # a random tiny model answers nonsense: every order is asked, and retried strictly when unreadable
    assert 4 <= model.stats["paid_calls"] <= 8
    assert rerun.stats["paid_calls"] == 0 and again == result
    for item in result:
        assert item["preference"] is None or 1.0 <= item["preference"] <= 2.0
        assert item["preference_from"] in ("logprobs", "verdicts", None)
        assert len(item["orders"]) == 2
        assert all(len(order["texts"]) == (1 if order["verdict"] else 2) for order in item["orders"])
        assert (item["preference"] is None) == (item["failure"] is not None)
