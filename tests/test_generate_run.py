"""`apprentice generate` end to end against scripted OpenAI-compatible teachers on 127.0.0.1: the right records are
kept, the right ones rejected with the right reasons and counted; resuming (after kill -9 too) reaches the same
data; the request cap, bad seed files and changed settings stop the run cleanly."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sample_tasks import SEED_INSTRUCTIONS as ALL_SEED_INSTRUCTIONS
from sample_tasks import write_seed_file
from servers import Reply, ScriptedServer, chat_reply, completion_reply, invented_words

from apprentice.generate.config import GenerateConfig
from apprentice.generate.filters import FilterConfig, check_instruction
from apprentice.generate.run import generate
from apprentice.models.base import Completion

SEED_INSTRUCTIONS = ALL_SEED_INSTRUCTIONS[:8]


@pytest.fixture
def seeds_file(tmp_path) -> Path:
    return write_seed_file(tmp_path / "seeds.jsonl", SEED_INSTRUCTIONS)


def _prompt(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body["prompt"]


def _instruction_of(prompt: str) -> str:
    return prompt.rstrip().rsplit("Task: ", 1)[1].split("\n")[0].strip()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---- known texts: every kind of answer, each kept or rejected with its reason --------------------------------------

GOOD = "Describe how a bicycle gear system makes climbing hills easier."
BOOTSTRAP_ANSWER = "\n".join([
    "Sure! Here are eight new tasks:",
    f"9. {SEED_INSTRUCTIONS[0]}",  # a seed again: near duplicate
    "10. Draw a picture of a sunset over the ocean.",  # blacklisted word
    "11. Say hi.",  # too short
    "12. Summarize the story of a famous novel in three sentences.",  # instance answer is malformed
    "13. Summarize the story of a famous novel in three short sentences.",  # near duplicate of 12 (proposed)
    "14. List five countries in South America with their capitals.",  # instance answer cut by the length limit
    "15. Explain why the moon shows phases during the month.",  # instance answer has an empty output
    f"16. {GOOD}",
    "I hope these help!",
])
INSTANCE_ANSWERS = {
    "Summarize the story of a famous novel in three sentences.": chat_reply("I am not sure what you mean."),
    "List five countries in South America with their capitals.": chat_reply(
        "Input: <noinput>\nOutput: 1. Brazil - Brasília\n2. Argentina - Bu", finish_reason="length"),
    "Explain why the moon shows phases during the month.": chat_reply("Input: <noinput>\nOutput:"),
    GOOD: chat_reply("**Input:** <noinput>\n**Output:** Lower gears turn the wheel less per pedal stroke, so each "
                     "stroke needs less force on a steep slope."),
}


def known_teacher(path: str, body: dict) -> Reply:
    prompt = _prompt(body)
    if "numbered list" in prompt:
        return chat_reply(BOOTSTRAP_ANSWER)
    return INSTANCE_ANSWERS[_instruction_of(prompt)]


def test_self_instruct_keeps_and_rejects_known_answers_with_their_reasons(tmp_path, seeds_file):
    out = tmp_path / "run"
    with ScriptedServer(known_teacher) as server:
        result = generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=out, num=1, seeds=seeds_file,
                                         concurrency=4, price_in=1.0, price_out=2.0, outputs="inline"))
        assert server.count("/chat/completions") == 5  # one bootstrap, four instance requests

    assert result.status == "done"
    [record] = _lines(out / "data.jsonl")
    assert (record["instruction"], record["input"]) == (GOOD, "")
    assert record["output"].startswith("Lower gears turn the wheel")
    assert record["teacher"] == f"openai:scripted@{server.url}" and record["strategy"] == "self-instruct"
    assert len(record["seed_ids"]) == 8 and set(record["seed_ids"]) <= {f"s{i}" for i in range(8)}
    assert len(record["request_id"]) == 64 and record["parent_job"] == 0
    # the nearest instruction the index examined, with its real score (or none when no instruction shares a rare
    # word with it); the decision is exact: no seed scores above the threshold
    from apprentice.generate.rouge import rouge_l_f, tokenize

    scores = {seed: rouge_l_f(tokenize(seed), tokenize(GOOD)) for seed in SEED_INSTRUCTIONS}
    assert max(scores.values()) <= 0.7
    if record["most_similar"]:
        assert record["most_similar_score"] == scores[record["most_similar"]]
    else:
        assert record["most_similar_score"] == 0.0

    rejected = _lines(out / "rejected.jsonl")
    by_reason = {(r["reason"], r["instruction"]) for r in rejected}
    config = FilterConfig()
    assert by_reason == {
        ("near_duplicate", SEED_INSTRUCTIONS[0]),
        (check_instruction("Draw a picture of a sunset over the ocean.", config),
         "Draw a picture of a sunset over the ocean."),
        (check_instruction("Say hi.", config), "Say hi."),
        ("near_duplicate", "Summarize the story of a famous novel in three short sentences."),
        ("unparseable", "Summarize the story of a famous novel in three sentences."),
        ("truncated", "List five countries in South America with their capitals."),
        ("empty_output", "Explain why the moon shows phases during the month."),
    }
    duplicate = next(r for r in rejected if r["instruction"] == SEED_INSTRUCTIONS[0])
    assert duplicate["most_similar"] == SEED_INSTRUCTIONS[0] and duplicate["most_similar_score"] == 1.0
    unparseable = next(r for r in rejected if r["reason"] == "unparseable")
    assert unparseable["raw"] == "I am not sure what you mean." and unparseable["stage"] == "example"

    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 1 and stats["rejected"] == 7
    assert stats["rejected_by_reason"] == {"blacklisted_word": 1, "empty_output": 1, "near_duplicate": 2,
                                           "too_short": 1, "truncated": 1, "unparseable": 1}
    assert stats["requests"] == {"answered": 5, "cached": 0, "paid": 5, "failed": 0}
    assert stats["tokens"]["prompt"] == 25 and stats["tokens"]["completion"] == 35
    assert stats["cost_usd"] == pytest.approx((25 * 1.0 + 35 * 2.0) / 1e6)
    assert json.loads((out / "alpaca_data.json").read_text()) == [
        {"instruction": GOOD, "input": "", "output": record["output"]}]
    saved = json.loads((out / "generate_config.json").read_text())
    assert saved["strategy"] == "self-instruct" and saved["api"] == "chat" and saved["num"] == 1

    # the same command again: already done, nothing asked, nothing written twice
    with ScriptedServer(known_teacher) as server:
        again = generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=out, num=1, seeds=seeds_file,
                                        outputs="inline"))
        assert server.count() == 0
    assert again.status == "done" and len(_lines(out / "data.jsonl")) == 1 and len(_lines(out / "rejected.jsonl")) == 7


# ---- the Alpaca strategy against a completion endpoint --------------------------------------------------------------

ALPACA_ANSWER = (
    " Name three primary colors.\n4. Input:\n<noinput>\n4. Output:\nRed, blue and yellow.\n###\n"
    "5. Instruction: Rewrite the sentence in the passive voice.\n5. Input:\nThe dog chased the ball.\n5. Output:\n"
    "The ball was chased by the dog.\n###\n"
    "6. Instruction: Write a program that sorts a list of numbers.\n6. Input:\n<noinput>\n6. Output:\nsorted(x)\n###\n"
    f"7. Instruction: {SEED_INSTRUCTIONS[1]}\n7. Input:\nHello friend.\n7. Output:\nHola amigo.\n###\n"
    "8. Instruction: Give an antonym for the word.\n9. Input:\nhappy\n9. Output:\nsad\n###\n"
    "10. Instruction: Name the three primary colors.\n10. Input:\n<noinput>\n10. Output:\nRed, blue, yellow.\n###\n"
    "11. Instruction: Describe the smell of rain on dry earth.\n11. Input:\n<noinput>\n11. Output:\nEarthy and"
)


def test_alpaca_strategy_parses_numbered_tasks_and_drops_only_the_cut_off_one(tmp_path, seeds_file):
    def teacher(path, body):
        assert path.endswith("/completions") and body["prompt"].endswith("###\n4. Instruction:")
        assert body["temperature"] == 1.0 and body["max_tokens"] == 3072 and "20." in body["stop"]
        return completion_reply(ALPACA_ANSWER, finish_reason="length")

    out = tmp_path / "run"
    with ScriptedServer(teacher) as server:
        result = generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=out, num=2, seeds=seeds_file,
                                         api="completion", max_requests=1))
        assert server.count() == 1
    assert result.status == "done"
    kept = _lines(out / "data.jsonl")
    assert [(r["instruction"], r["input"], r["output"]) for r in kept] == [
        ("Name three primary colors.", "", "Red, blue and yellow."),
        ("Rewrite the sentence in the passive voice.", "The dog chased the ball.", "The ball was chased by the dog."),
    ]
    assert all(r["strategy"] == "alpaca" and len(r["seed_ids"]) == 3 for r in kept)
    # the target was reached inside the answer: the rest of it is neither kept nor rejected
    assert _lines(out / "rejected.jsonl") == []


def varied_alpaca_answer(prompt: str) -> str:
    """Three well-formed tasks drawn from the prompt, so different prompts give different, non-duplicate tasks."""
    rng = random.Random(prompt)
    items = []
    for n in range(4, 7):
        instruction = f"Describe the {invented_words(rng, 7)}."
        output = invented_words(rng, 9)
        items.append(f"{n}. Instruction: {instruction}\n{n}. Input:\n<noinput>\n{n}. Output:\n{output}.")
    return " " + "\n###\n".join(items)[len("4. Instruction: "):] + "\n###\n7. Instruction:"


def test_several_prompts_per_request_give_the_same_data_in_fewer_requests(tmp_path, seeds_file):
    sizes: list[int] = []

    def teacher(path, body):
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        sizes.append(len(prompts))
        return completion_reply([varied_alpaca_answer(p) for p in prompts])

    runs = {}
    with ScriptedServer(teacher) as server:
        for per_request in (1, 4):
            sizes.clear()
            out = tmp_path / f"run{per_request}"
            result = generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=out, num=30,
                                             seeds=seeds_file, api="completion", concurrency=2,
                                             prompts_per_request=per_request, window=40))
            assert result.status == "done"
            runs[per_request] = (_lines(out / "data.jsonl"), list(sizes), result.stats)
    (one_data, one_sizes, one_stats), (four_data, four_sizes, four_stats) = runs[1], runs[4]
    assert len(one_data) == 30 and four_data == one_data  # the same requests, so the same data
    assert set(one_sizes) == {1} and max(four_sizes) == 4 and len(four_sizes) < len(one_sizes)
    # usage is shared out per prompt, so the token counts of the two runs agree
    assert four_stats.prompt_tokens == 5 * four_stats.answers


def test_several_prompts_per_request_need_an_http_completion_teacher(tmp_path, seeds_file):
    proc = subprocess.run([sys.executable, "-m", "apprentice", "generate", "--teacher",
                           "openai:m@http://127.0.0.1:9/v1", "--num", "2", "--out", str(tmp_path / "run"),
                           "--prompts-per-request", "5"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--api completion" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_alpaca_rejections_with_a_larger_target(tmp_path, seeds_file):
    with ScriptedServer(lambda p, b: completion_reply(ALPACA_ANSWER, finish_reason="length")) as server:
        result = generate(GenerateConfig(teacher=f"openai:scripted@{server.url}", out=tmp_path / "run", num=3,
                                         seeds=seeds_file, api="completion", concurrency=1, max_requests=2))
    assert result.status == "capped"
    rejected = [(r["reason"], r["instruction"]) for r in _lines(tmp_path / "run" / "rejected.jsonl")]
    first = rejected[:5]  # the first answer's rejections; the second answer repeats the first and is all duplicates
    assert first == [
        ("write_a_program", "Write a program that sorts a list of numbers."),
        ("near_duplicate", SEED_INSTRUCTIONS[1]),
        ("unparseable", ""),  # item 8 has its input and output numbered 9
        ("near_duplicate", "Name the three primary colors."),
        ("truncated", ""),
    ]
    assert [reason for reason, _ in rejected[5:]] == ["near_duplicate", "near_duplicate", "write_a_program",
                                                      "near_duplicate", "unparseable", "near_duplicate", "truncated"]


# ---- a garbage teacher stops at the request cap, with a clear message -----------------------------------------------

def test_garbage_teacher_stops_at_the_request_cap(tmp_path, seeds_file):
    out = tmp_path / "run"
    with ScriptedServer(lambda p, b: chat_reply("blah " * 20)) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "apprentice", "generate", "--teacher", f"openai:scripted@{server.url}",
             "--num", "3", "--out", str(out), "--seeds", str(seeds_file), "--max-requests", "7"],
            check=False, capture_output=True, text=True, timeout=120)
        assert server.count() == 7
    assert proc.returncode == 1
    assert "stopped:" in proc.stdout and "7 requests (--max-requests)" in proc.stdout and "unparseable 7" in proc.stdout
    assert _lines(out / "data.jsonl") == [] and len(_lines(out / "rejected.jsonl")) == 7
    assert json.loads((out / "alpaca_data.json").read_text()) == []


# ---- resume: kill -9 in the middle, rerun, same data as an uninterrupted run -----------------------------------------

WORDS = ("amber basil cedar delta ember fjord garnet harbor indigo juniper kettle lantern meadow nectar orchid pebble "
         "quartz raven saffron thistle umber velvet willow yarrow zephyr").split()


def varied_teacher(delay: float, variant: str = ""):
    """Deterministic answers (a function of the prompt and `variant`), different for every prompt, with some
    rejects mixed in."""

    def handle(path, body):
        prompt = _prompt(body)
        rng = random.Random(prompt + variant)
        if "numbered list" in prompt:
            items = [f"{n}. Describe the {' '.join(rng.sample(WORDS, 6))} in detail." for n in range(9, 17)]
            items[rng.randrange(8)] = f"{9 + rng.randrange(8)}. Hi there."  # too short
            text = "\n".join(items)
        elif "Task:" not in prompt:  # a record's instruction, asked as a user would: the teacher's answer
            text = f"{' '.join(rng.choices(WORDS, k=10)).capitalize()}." if rng.random() > 0.2 else ""
        elif rng.random() < 0.2:
            text = "no idea"  # unparseable
        else:
            text = f"Input: <noinput>\nOutput: {' '.join(rng.choices(WORDS, k=12)).capitalize()}."
        reply = chat_reply(text)
        reply.delay = delay
        return reply

    return handle


def _cli(url: str, out: Path, seeds: Path, num: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "apprentice", "generate", "--teacher", f"openai:scripted@{url}", "--num",
            str(num), "--out", str(out), "--seeds", str(seeds), "--concurrency", "4", *extra]


def _data(out: Path) -> list[tuple]:
    return [(r["instruction"], r["input"], r["output"]) for r in _lines(out / "data.jsonl")]


@pytest.mark.parametrize("outputs", ["inline", "teacher"])
def test_kill_9_then_rerun_reaches_the_same_data_as_an_uninterrupted_run(tmp_path, seeds_file, outputs):
    num = 30
    with ScriptedServer(varied_teacher(delay=0.03)) as server:
        whole = tmp_path / "whole"
        cli = _cli(server.url, whole, seeds_file, num, "--outputs", outputs)
        subprocess.run(cli, check=True, capture_output=True, timeout=120)

        killed = tmp_path / "killed"
        proc = subprocess.Popen(_cli(server.url, killed, seeds_file, num, "--outputs", outputs),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(_lines(killed / "data.jsonl")) < 8 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _data(killed)
        assert 8 <= len(before) < num, "the kill came too late to test a resume"
        paid_before = server.count()

        rerun = subprocess.run(_cli(server.url, killed, seeds_file, num, "--outputs", outputs), capture_output=True,
                               text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed:" in rerun.stdout and "replayed from the response cache" in rerun.stdout

    after = _data(killed)
    assert after[: len(before)] == before  # nothing accepted before the kill was lost or rewritten
    assert after == _data(whole) and len(after) == num
    assert len({instruction for instruction, _, _ in after}) == num  # no duplicates
    stats = json.loads((killed / "stats.json").read_text())
    assert stats["requests"]["cached"] >= len(before)  # the replay did not pay again for what it had
    assert stats["requests"]["paid"] <= server.count() - paid_before
    assert _lines(killed / "rejected.jsonl") == _lines(whole / "rejected.jsonl")
    assert json.loads((killed / "stats.json").read_text())["rejected_by_reason"] == \
        json.loads((whole / "stats.json").read_text())["rejected_by_reason"]
    assert {r["output_from"] for r in _lines(killed / "data.jsonl")} == {outputs}


def test_rerun_with_a_larger_num_goes_on_and_a_lost_cache_continues_from_the_records(tmp_path, seeds_file):
    out = tmp_path / "run"
    with ScriptedServer(varied_teacher(delay=0)) as server:
        teacher = f"openai:scripted@{server.url}"
        generate(GenerateConfig(teacher=teacher, out=out, num=5, seeds=seeds_file, concurrency=2))
        first = _data(out)
        more = generate(GenerateConfig(teacher=teacher, out=out, num=9, seeds=seeds_file, concurrency=2))
        nine = _data(out)
        assert more.resumed_from == 5 and nine[:5] == first and len(nine) == 9

        (out / "requests.sqlite").unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{out / 'requests.sqlite'}{suffix}").unlink(missing_ok=True)
        # without the cache a teacher that now answers differently cannot replay the records: the run continues
        # from them with a fresh plan
        server.handler = varied_teacher(delay=0, variant="v2")
        last = generate(GenerateConfig(teacher=teacher, out=out, num=12, seeds=seeds_file, concurrency=2))
    assert not last.replayed and last.status == "done"
    data = _data(out)
    assert len(data) == 12 and data[:9] == nine
    assert len({instruction for instruction, _, _ in data}) == 12


# ---- bad input: one line naming the file and line, exit code 2, nothing written -------------------------------------

BAD_SEEDS = [
    ("invalid JSON", '{"id": "a", "instruction": "x", "instances": [], "is_classification": false}\n{oops\n', ":2:"),
    ("missing field", '{"id": "a", "name": "a", "instances": [{"input": "", "output": "y"}], '
                      '"is_classification": false}\n', ":1:"),
    ("empty file", "", "no seed tasks"),
]


@pytest.mark.parametrize("name, text, expected", BAD_SEEDS, ids=[c[0] for c in BAD_SEEDS])
def test_bad_seed_file_is_one_line_exit_2_and_nothing_written(tmp_path, name, text, expected):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(text)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "apprentice", "generate", "--teacher", "openai:x@http://127.0.0.1:9/v1", "--num", "3",
         "--out", str(out), "--seeds", str(seeds)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(seeds) in lines[0] and expected in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_non_utf8_and_duplicate_ids_name_the_line(tmp_path):
    good = json.dumps({"id": "a", "name": "a", "instruction": "Say something kind.",
                       "instances": [{"input": "", "output": "You matter."}], "is_classification": False})
    cases = {"latin1.jsonl": (good + "\n").encode() + b'{"id": "caf\xe9"}\n',
             "dupes.jsonl": (good + "\n" + good + "\n").encode()}
    for name, data in cases.items():
        seeds = tmp_path / name
        seeds.write_bytes(data)
        out = tmp_path / f"run-{name}"
        proc = subprocess.run(
            [sys.executable, "-m", "apprentice", "generate", "--teacher", "openai:x@http://127.0.0.1:9/v1", "--num",
             "3", "--out", str(out), "--seeds", str(seeds)], check=False, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and f"{seeds}:2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_resuming_with_different_settings_is_refused(tmp_path, seeds_file):
    out = tmp_path / "run"
    with ScriptedServer(varied_teacher(delay=0)) as server:
        teacher = f"openai:scripted@{server.url}"
        generate(GenerateConfig(teacher=teacher, out=out, num=2, seeds=seeds_file))
        proc = subprocess.run(
            [sys.executable, "-m", "apprentice", "generate", "--teacher", teacher, "--num", "4", "--out", str(out),
             "--seeds", str(seeds_file), "--seed", "7"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "different seed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert len(_lines(out / "data.jsonl")) == 2


def test_a_cut_anywhere_in_a_later_segment_replays_to_the_same_files(tmp_path, seeds_file):
    """After --num grew (a new plan from the records there were), losing the tail of the files, as a kill does,
    and rerunning rebuilds exactly the same files from the response cache."""
    out = tmp_path / "run"
    with ScriptedServer(varied_teacher(delay=0)) as server:
        teacher = f"openai:scripted@{server.url}"
        generate(GenerateConfig(teacher=teacher, out=out, num=4, seeds=seeds_file, concurrency=3))
        generate(GenerateConfig(teacher=teacher, out=out, num=10, seeds=seeds_file, concurrency=3))
        data, rejected = (out / "data.jsonl").read_text(), (out / "rejected.jsonl").read_text()
        # keep what was committed before the job of the 8th record (job ids count from 0 in each plan)
        cut_job = _lines(out / "data.jsonl")[7]["job"]
        earlier = json.loads((out / "generate_config.json").read_text())["segment"]["rejections"]
        lines = data.splitlines(keepends=True)[:7]
        rejections = rejected.splitlines(keepends=True)
        rejections = rejections[:earlier] + [r for r in rejections[earlier:] if json.loads(r)["job"] < cut_job]
        (out / "data.jsonl").write_text("".join(lines) + '{"instruction": "half a rec')  # and a torn last line
        (out / "rejected.jsonl").write_text("".join(rejections))
        paid = server.count()
        again = generate(GenerateConfig(teacher=teacher, out=out, num=10, seeds=seeds_file, concurrency=3))
        # every answer the records need comes from the cache; the only new calls allowed are the few the dispatcher
        # sends ahead (at most --concurrency) that the first run had in flight, unrecorded, when it reached --num
        assert server.count() - paid <= 3
    assert again.replayed and again.resumed_from == 7
    assert (out / "data.jsonl").read_text() == data and (out / "rejected.jsonl").read_text() == rejected


# ---- real teachers: apprentice serve over a tiny random model, and the bundled model ---------------------------------

def test_against_apprentice_serve_over_a_tiny_model_everything_is_recorded(tmp_path, tiny_model_dir):
    from servers import ServeProcess

    out = tmp_path / "run"
    with ServeProcess(f"hf:{tiny_model_dir}") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "apprentice", "generate", "--teacher", f"openai:model@{server.url}", "--num", "1",
             "--out", str(out), "--max-requests", "2", "--concurrency", "2"],
            check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr  # done, or stopped at the cap: random weights write garbage
    assert "Traceback" not in proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    kept, rejected = _lines(out / "data.jsonl"), _lines(out / "rejected.jsonl")
    assert stats["kept"] == len(kept) and stats["rejected"] == len(rejected) >= 1
    assert sum(stats["rejected_by_reason"].values()) == len(rejected)
    assert 1 <= stats["requests"]["answered"] <= 2 and stats["tokens"]["completion"] > 0
    assert all(r["reason"] and r["request_id"] for r in rejected)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 minutes on an idle 2-core CPU; a loaded one can be several times slower
def test_bundled_teacher_writes_records_that_pass_the_filters(tmp_path):
    from apprentice.generate.filters import check_example, normalize_no_input
    from apprentice.generate.rouge import RougeLIndex

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "apprentice", "generate", "--teacher", "bundled:smollm2-135m-instruct", "--num", "2",
         "--out", str(out), "--max-requests", "40", "--answer-max-tokens", "160"],  # the demo's answer length
        check=False, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = _lines(out / "data.jsonl")
    assert len(records) == 2 and "generate: summary" in proc.stdout
    index = RougeLIndex(0.7)
    config = FilterConfig()
    for record in records:
        assert check_instruction(record["instruction"], config) is None
        assert check_example(record["instruction"], record["input"], record["output"], config) is None
        assert normalize_no_input(record["input"]) == record["input"]
        assert index.query(record["instruction"]).score <= 0.7
        index.add(record["instruction"])
    saved = json.loads((out / "generate_config.json").read_text())
    # the defaults for a local chat model
    assert (saved["api"], saved["strategy"], saved["outputs"]) == ("completion", "self-instruct", "teacher")
    assert all(r["output_from"] == "teacher" for r in records)
    assert json.loads((out / "stats.json").read_text())["kept"] == 2


def test_a_teacher_that_fails_for_good_stops_with_one_line_and_keeps_what_it_had(tmp_path, seeds_file):
    good = varied_teacher(delay=0)
    out = tmp_path / "run"

    def teacher(path, body):
        # fail for good once a few records are on disk (counting answers instead depends on arrival order)
        data = out / "data.jsonl"
        if data.exists() and data.read_text().count("\n") >= 3:
            return Reply(status=404, body={"error": {"message": "the model 'scripted' does not exist"}})
        return good(path, body)

    with ScriptedServer(teacher) as server:
        proc = subprocess.run(_cli(server.url, out, seeds_file, 20), check=False, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2 and "HTTP 404" in proc.stderr and "Traceback" not in proc.stderr
    kept = _data(out)
    assert 1 <= len(kept) < 20
    assert [(r["instruction"], r["input"], r["output"]) for r in json.loads((out / "alpaca_data.json").read_text())] \
        == kept
    assert json.loads((out / "stats.json").read_text())["kept"] == len(kept)


# ---- teacher outputs from a local chat model: asked exactly as `apprentice answer` asks it -----------------------------

@pytest.mark.parametrize("chat", [True, False])
def test_a_local_teachers_answers_are_what_apprentice_answer_gets(tmp_path, tiny_model_dir, tiny_base_model_dir,
                                                                  chat):
    from apprentice.evaluate.answer import AnswerConfig, answer
    from apprentice.generate.config import plan_of, resolve
    from apprentice.generate.loop import Generation
    from apprentice.generate.seeds import load_seed_tasks
    from apprentice.models.local import LocalModel
    from apprentice.models.base import BackendOptions

    model_dir = tiny_model_dir if chat else tiny_base_model_dir
    config = resolve(GenerateConfig(teacher=f"hf:{model_dir}", out=tmp_path / "run", num=2,
                                    strategy="self-instruct", outputs=None if chat else "teacher",
                                    answer_max_tokens=12))
    assert config.outputs == "teacher"  # the default for a chat model; asked for explicitly for the base one
    plan = plan_of(config)
    assert plan.answer_chat is chat
    state = Generation(plan, load_seed_tasks(None), config.filters, teacher=config.teacher)
    jobs = state.new_jobs()
    answers = []
    while jobs and not answers:  # scripted generating answers, until records wait for the teacher's answers
        job = jobs.pop(0)
        text = ("Task 1: Describe the harbor at night in three sentences.\nTask 2: Explain how tides work on "
                "the coast." if job.kind == "bootstrap" else "Input: <noinput>\nOutput: x")
        state.receive(job.id, Completion(text, "stop"))
        new = state.new_jobs()
        answers += [j for j in new if j.kind == "answer"]
        jobs += [j for j in new if j.kind != "answer"]
    assert answers
    model = LocalModel.from_dir(str(model_dir), f"hf:{model_dir}", BackendOptions(batch_size=4))
    try:
        generated = [c.text.strip() for c in model.generate([j.request for j in answers])]
    finally:
        model.close()
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": j.instruction, "input": j.input, "output": ""} for j in answers]))
    records = answer(AnswerConfig(model=f"hf:{model_dir}", prompts=str(prompts), out=str(tmp_path / "a.json"),
                                  max_tokens=12, batch_size=4))
    assert [r["output"] for r in records] == generated


# ---- one writer per run directory ------------------------------------------------------------------------------------

def test_a_second_process_on_the_same_out_stops_with_one_line_naming_the_first(tmp_path, seeds_file):
    out = tmp_path / "run"
    good, gate = varied_teacher(delay=0), threading.Event()

    def teacher(path, body):  # once the first process has written a record, it waits until the second has tried
        if _lines(out / "data.jsonl"):
            gate.wait(timeout=60)
        return good(path, body)

    with ScriptedServer(teacher) as server:
        first = subprocess.Popen(_cli(server.url, out, seeds_file, 12), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not _lines(out / "data.jsonl") and time.time() < deadline:  # the first one is writing
            time.sleep(0.02)
        second = subprocess.run(_cli(server.url, out, seeds_file, 12), capture_output=True, text=True, timeout=60)
        gate.set()
        assert first.wait(timeout=120) == 0
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    assert f"in use by process {first.pid} (apprentice generate)" in second.stderr
    records = _data(out)
    assert len(records) == 12 and len(set(records)) == 12  # exactly one run's data
    # the lock went with its holder: the same command now finds the run done
    again = subprocess.run(_cli(server.url, out, seeds_file, 12), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and _data(out) == records


# ---- requests that fail after their retries: recorded, counted, and the run goes on --------------------------------

def test_a_request_that_fails_after_its_retries_is_a_rejection_and_the_run_goes_on(tmp_path, seeds_file):
    good = varied_teacher(delay=0)
    broken = "juniper"  # every request whose prompt holds this word gets a 503, however often it is tried

    def teacher(path, body):
        if broken in _prompt(body):
            return Reply(status=503, body={"error": {"message": "overloaded"}})
        return good(path, body)

    out = tmp_path / "run"
    with ScriptedServer(teacher) as server:
        proc = subprocess.run(_cli(server.url, out, seeds_file, 12, "--max-retries", "1"), capture_output=True,
                              text=True, timeout=300)
        tries = sum(broken in _prompt(body) for _, body in server.requests)
    assert proc.returncode == 0, proc.stderr
    failed = [r for r in _lines(out / "rejected.jsonl") if r["reason"] == "request_failed"]
    assert failed and all(r["stage"] == "request" and "HTTP 503" in r["raw"] for r in failed)
    assert tries == 2 * len(failed)  # each failed request was tried twice (--max-retries 1), then recorded
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 12 and stats["requests"]["failed"] == len(failed)
    assert stats["rejected_by_reason"]["request_failed"] == len(failed) and "failed after their retries" in proc.stdout
    # failures are not answers: nothing of them is in the call record, so a rerun would ask them again
    import sqlite3

    recorded = [json.loads(r[0]) for r in sqlite3.connect(out / "requests.sqlite").execute("SELECT request FROM calls")]
    assert not any(broken in (r["prompt"] or r["messages"][-1]["content"]) for r in recorded)


def test_a_teacher_that_fails_everything_stops_after_ten_in_a_row_with_one_line(tmp_path, seeds_file):
    out = tmp_path / "run"
    with ScriptedServer(lambda path, body: Reply(status=500, body={"error": {"message": "down"}})) as server:
        proc = subprocess.run(_cli(server.url, out, seeds_file, 5, "--max-retries", "0"), capture_output=True,
                              text=True, timeout=300)
        sent = server.count()
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]  # after the progress bar
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "failed 10 requests in a row" in error and "HTTP 500" in error
    assert 10 <= sent <= 10 + 4  # at most what was in flight (--concurrency 4) when the tenth failure came back
