"""`apprentice run` end to end on a tiny random student and a scripted teacher/judge server: every artifact is made,
an unchanged rerun skips every stage (zero teacher requests), a changed setting redoes that stage and what follows,
`--from` forces a stage, and bad configs fail before anything runs."""

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from servers import ScriptedServer, chat_reply

INSTRUCTIONS = [
    "Name three rivers that flow through Germany.", "Explain why the sky looks blue during the day.",
    "Suggest a title for a blog post about home baking.", "Convert 25 degrees Celsius to Fahrenheit.",
    "List four benefits of regular stretching.", "Rewrite this sentence in the passive voice.",
    "Classify the sentiment of the given review as positive or negative.",
    "Summarize the plot of a fairy tale in one sentence.", "Give two arguments for learning history at school.",
    "Translate the greeting into Spanish.", "Describe how a bicycle gear works to a child.",
    "Propose a name for a friendly robot mascot.", "Compare cats and dogs as pets in a short paragraph.",
    "Count the vowels in the given word.", "Recommend a board game for a family evening.",
    "Outline the steps to repot a houseplant.", "Identify the verb in the following sentence.",
    "Estimate how many minutes are in a week.", "Invent a riddle whose answer is a candle.",
    "Draft a polite reminder about an unpaid invoice.", "Sort these numbers from smallest to largest.",
    "Define photosynthesis in simple words.", "Brainstorm slogans for a neighbourhood cleanup day.",
    "Check whether the given year is a leap year.", "Offer advice to someone starting their first job.",
    "Paraphrase the proverb about early birds.", "Extract the dates mentioned in the text.",
    "Plan a three-day reading schedule for a short novel.", "Answer: what is the boiling point of water at sea level?",
    "Create a short packing list for a beach day.",
]


def teacher_handler():
    """Alpaca prompts get 3 fresh tasks each; judge prompts always get "A"; anything else a short answer."""
    lock = threading.Lock()
    counter = [0]

    def handler(path, body):
        prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
        if "Which response is better" in prompt:
            return chat_reply("A")
        match = re.search(r"(\d+)\. Instruction:\s*$", prompt)
        if match:
            first = int(match.group(1))
            with lock:
                start = counter[0]
                counter[0] += 3
            items = []
            for k in range(3):
                instruction = INSTRUCTIONS[(start + k) % len(INSTRUCTIONS)]
                items.append(f"{first + k}. Instruction: {instruction}\n{first + k}. Input:\n<noinput>\n"
                             f"{first + k}. Output:\nHere is a careful answer about {instruction.split()[1]}.")
            return chat_reply("\n###\n".join(items))
        return chat_reply("A short and helpful answer.")

    return handler


CONFIG = """
[teacher]
model = "openai:teacher@{url}"
concurrency = 2

[generate]
num = 6
strategy = "alpaca"
api = "chat"
max_requests = 30

[train]
base = "hf:{base}"
max_steps = 3
lr = 1e-3
token_budget = 2048
max_len = 128
save_every = 0

[eval]
limit = 4
max_tokens = 8
before_after = 2
batch_size = 4

[judge]
orders = 2
"""


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "apprentice", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def teacher():
    with ScriptedServer(teacher_handler()) as server:
        yield server


def write_config(tmp_path: Path, teacher, base: Path, **replace) -> Path:
    text = CONFIG.format(url=teacher.url, base=base)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_run_end_to_end_then_skip_then_redo(tmp_path, teacher, tiny_base_model_dir):
    config = write_config(tmp_path, teacher, tiny_base_model_dir)
    run_dir = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads((run_dir / "generate" / "alpaca_data.json").read_text())
    assert len(data) == 6 and all(set(r) == {"instruction", "input", "output"} for r in data)
    assert (run_dir / "student" / "config.json").exists()
    metrics = [json.loads(line) for line in (run_dir / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m][-1] == 3
    student = json.loads((run_dir / "answers" / "student.json").read_text())
    teacher_answers = json.loads((run_dir / "answers" / "teacher.json").read_text())
    base = json.loads((run_dir / "answers" / "base.json").read_text())
    assert len(student) == len(teacher_answers) == 4 and len(base) == 2
    assert {r["generator"] for r in student} == {"student"}
    assert all(r["output"] == "A short and helpful answer." for r in teacher_answers)
    annotations = json.loads((run_dir / "judge" / "annotations.json").read_text())
    assert len(annotations) == 4
    # the judge always says "A": with both orders every non-identical pair is a tie
    assert all(a["preference"] == 1.5 for a in annotations)
    tally = json.loads((run_dir / "tally.json").read_text())
    assert tally["ties"] == 4 and tally["wins"] == 0 and tally["losses"] == 0
    fidelity = json.loads((run_dir / "fidelity.json").read_text())
    # prompts longer than [train] max_len (128 here) leave nothing to score and are counted as dropped
    assert [(m["role"], m["prompts"] + m["dropped"]) for m in fidelity["models"]] == [("base", 4), ("student", 4)]
    assert all(m["nll"] > 0 and m["tokens"] > 0 for m in fidelity["models"])
    assert [(a["role"], a["prompts"]) for a in fidelity["answers"]] == [("base", 2), ("student", 4)]
    assert all(r["output_from"] == "teacher" for r in map(json.loads, (run_dir / "generate" / "data.jsonl")
                                                          .read_text().splitlines()))
    assert (run_dir / "report.html").exists()
    assert "[teacher]" in (run_dir / "run.toml").read_text()

    before = teacher.count()
    again = run_cli("run", str(config), "--out", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert teacher.count() == before
    # generate, train, references, answer, fidelity, judge, tally
    assert again.stdout.count("up to date, skipped") == 7

    # a changed train setting redoes train and what follows; `launch` runs training as its own process
    changed = write_config(tmp_path, teacher, tiny_base_model_dir,
                           **{"max_steps = 3": f"max_steps = 2\nlaunch = {json.dumps(sys.executable)}"})
    redo = run_cli("run", str(changed), "--out", str(run_dir))
    assert redo.returncode == 0, redo.stderr
    assert "generate: up to date, skipped" in redo.stdout
    assert "train: up to date" not in redo.stdout and "answer: up to date" not in redo.stdout
    assert "launching: " in redo.stdout
    metrics = [json.loads(line) for line in (run_dir / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m][-1] == 2

    forced = run_cli("run", str(changed), "--out", str(run_dir), "--from", "judge")
    assert forced.returncode == 0, forced.stderr
    assert "answer: up to date, skipped" in forced.stdout and "judge: up to date" not in forced.stdout


@pytest.mark.parametrize("edit,message", [
    ({"[judge]": "[jugde]"}, "unknown section [jugde]"),
    ({"max_steps = 3": "max_stepz = 3"}, "[train]: unknown key 'max_stepz'"),
    ({"lr = 1e-3": "lr = \"fast\""}, "[train].lr must be a number"),
    ({"num = 6": "num = 0"}, "[generate] num must be at least 1"),
    ({"concurrency = 2": "concurrency = 2\nprompts_per_request = 0"},
     "[teacher] prompts_per_request must be at least 1"),
    ({"orders = 2": "orders = 3"}, "[judge] orders must be 1 or 2"),
    ({'base = "hf:': 'base = "bundled:nope'}, "[train] base: unknown bundled model"),
    ({"limit = 4": "limit = [4]"}, "[eval].limit must be an integer"),
    ({"[eval]": "[eval\n"}, "invalid TOML"),
    ({"[train]": "[generate.filters]\nmax_words = \"many\"\n[train]"}, "[generate].filters.max_words must be an integer"),
    ({"[train]": "[generate.filters]\nblacklist = \"map\"\n[train]"}, "[generate].filters.blacklist must be a list"),
])
def test_bad_config_fails_before_anything_runs(tmp_path, teacher, tiny_base_model_dir, edit, message):
    config = write_config(tmp_path, teacher, tiny_base_model_dir, **edit)
    before = teacher.count()
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()
    assert teacher.count() == before


def test_config_sets_filter_thresholds(tmp_path, teacher, tiny_base_model_dir):
    from apprentice.pipeline.config import load_config

    config = write_config(tmp_path, teacher, tiny_base_model_dir,
                          **{"[train]": "[generate.filters]\nmax_words = 60\nblacklist = [\"map\"]\n[train]"})
    filters = load_config(config).generate.filters
    assert filters.max_words == 60 and filters.blacklist == ("map",) and filters.min_words == 4


def test_unknown_from_stage(tmp_path, teacher, tiny_base_model_dir):
    config = write_config(tmp_path, teacher, tiny_base_model_dir)
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--from", "trian")
    assert result.returncode == 2 and "unknown stage 'trian'" in result.stderr


def test_shipped_configs_load():
    from apprentice.pipeline.config import demo_config, load_config

    demo = demo_config()
    assert demo.teacher.model == "bundled:smollm2-135m-instruct" and demo.train.lora
    for path in sorted((Path(__file__).parents[1] / "examples").glob("*.toml")):
        assert load_config(path).train.base


def test_capped_generation_goes_on_with_what_was_kept(tmp_path, teacher, tiny_base_model_dir):
    config = write_config(tmp_path, teacher, tiny_base_model_dir,
                          **{"num = 6": "num = 50", "max_requests = 30": "max_requests = 2"})
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    kept = len(json.loads((tmp_path / "run" / "generate" / "alpaca_data.json").read_text()))
    assert 0 < kept <= 6  # 2 requests of 3 tasks each, some of which may repeat earlier tests' tasks
    assert f"generate stopped at max_requests with {kept} of 50 records" in " ".join(result.stdout.split())
    assert (tmp_path / "run" / "report.html").exists()


# ---- reruns never pay twice and never lose a human vote ------------------------------------------------------------

def _vote_on_everything(db_path: Path, name: str) -> int:
    """Cast one vote per item as annotator `name`, through the votes app's store; returns how many."""
    from apprentice.annotate import store

    db = store.create_db(db_path)
    try:
        annotator = store.find_annotator(db, store.add_annotator(db, name))
        cast = 0
        while (shown := store.next_item(db, annotator, votes_per_item=1)) is not None:
            store.record_vote(db, annotator, shown.item_id, "left", "", votes_per_item=1)
            store.advance(db, annotator, shown.item_id)
            cast += 1
        return cast
    finally:
        db.close()


def test_reruns_after_changes_send_no_request_twice_and_keep_every_vote(tmp_path, tiny_base_model_dir):
    from apprentice.evaluate.tally import read_annotations

    bodies: list[str] = []
    handler = teacher_handler()

    def recording(path, body):
        bodies.append(json.dumps({"path": path, **body}, sort_keys=True))
        return handler(path, body)

    run_dir = tmp_path / "run"
    with ScriptedServer(recording) as first, ScriptedServer(recording) as second:
        def run(**edits) -> int:
            """Rerun with these edits of the config; returns the requests it sent."""
            before = len(bodies)
            config = write_config(tmp_path, first, tiny_base_model_dir,
                                  **{"[judge]": "[annotate]\nvotes_per_item = 1\n\n[judge]", **edits})
            result = run_cli("run", str(config), "--out", str(run_dir))
            assert result.returncode == 0, result.stdout + result.stderr
            return len(bodies) - before

        assert run() > 0
        votes = _vote_on_everything(run_dir / "votes.sqlite", "ann")
        assert votes == 4
        assert run(**{"num = 6": "num = 9"}) > 0  # generate goes on to 9 records: new requests only
        assert len(json.loads((run_dir / "generate" / "alpaca_data.json").read_text())) == 9
        assert run(**{"num = 6": "num = 9", "max_requests = 30": "max_requests = 30\nprice_in = 2.5"}) == 0
        moved = {"num = 6": "num = 9", f"openai:teacher@{first.url}": f"openai:teacher@{second.url}"}
        assert run(**moved) == 0  # the same teacher at another URL: every answer comes from the call record
        moved["lr = 1e-3"] = "lr = 5e-4"
        run(**moved)  # retrained: at most the judge's calls on answers that changed
        moved["max_tokens = 8"] = "max_tokens = 6"
        assert run(**moved) > 0  # shorter answers: the teacher's are asked anew, and every pair changed
        assert run(**moved, **{"orders = 2": "orders = 1"}) == 0  # one order of each pair: calls made already
    assert len(bodies) == len(set(bodies)), "a request that was answered was sent again"

    # every vote survives: the database of the earlier answers was kept under its own name, and the report shows it
    earlier = sorted(run_dir.glob("votes.*.sqlite"))
    assert earlier and len(read_annotations(run_dir / "votes.sqlite")) == 0
    assert sum(len(read_annotations(path)) for path in earlier) == votes
    report = (run_dir / "report.html").read_text()
    assert "Votes on earlier answers" in report and earlier[0].name in report
    assert (run_dir / "replaced").is_dir() and not (run_dir / "generate" / "requests.sqlite").exists()
