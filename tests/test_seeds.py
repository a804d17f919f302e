"""Seed tasks: the shipped file keeps its promises, the original 175 load exactly, and every bad file fails with one
line naming the file and line. Run: python -m pytest tests/test_seeds.py -q"""

from __future__ import annotations

import json
import re
from itertools import combinations

import pytest
from rouge_score import rouge_scorer

from apprentice.errors import UserError
from apprentice.generate.seeds import Instance, SeedTask, load_seed_tasks, seed_to_json

# Alpaca's instruction filters, restated here so the shipped seeds are checked against the rules independently.
BLACKLIST = re.compile(
    r"\b(images?|graphs?|pictures?|files?|maps?|draw|plot|go to|video|audio|music|flowchart|diagram)\b", re.I
)


def rouge_l(scorer: rouge_scorer.RougeScorer, a: str, b: str) -> float:
    return scorer.score(a, b)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def seeds() -> list[SeedTask]:
    return load_seed_tasks()


@pytest.fixture(scope="module")
def scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def test_shipped_seeds_sizes_and_kinds(seeds):
    assert len(seeds) >= 110
    assert sum(task.is_classification for task in seeds) >= 20
    with_input = sum(bool(task.instances[0].input) for task in seeds) / len(seeds)
    assert 0.4 <= with_input <= 0.6
    assert [task.id for task in seeds] == [f"apprentice_seed_{n}" for n in range(len(seeds))]
    assert len({task.name for task in seeds}) == len(seeds)
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", task.name) for task in seeds)


def test_shipped_seeds_pass_alpaca_filters(seeds):
    for task in seeds:
        words = len(task.instruction.split())
        assert 4 <= words <= 150, task.id
        assert not BLACKLIST.search(task.instruction), task.id
        assert not task.instruction.startswith("Write a program"), task.id
        assert task.instruction[0].isascii() and task.instruction[0].isalnum(), task.id
        assert all(instance.output.strip() for instance in task.instances), task.id


def test_shipped_seeds_have_no_near_duplicates(seeds, scorer):
    worst = max(rouge_l(scorer, a.instruction, b.instruction) for a, b in combinations(seeds, 2))
    assert worst <= 0.7


def test_shipped_seeds_are_not_near_copies_of_the_originals(seeds, scorer, shared_data):
    originals = load_seed_tasks(shared_data / "self_instruct" / "seed_tasks.jsonl")
    worst = max(rouge_l(scorer, ours.instruction, theirs.instruction) for ours in seeds for theirs in originals)
    assert worst <= 0.7


def test_original_175_seeds_load_and_round_trip(shared_data):
    path = shared_data / "self_instruct" / "seed_tasks.jsonl"
    tasks = load_seed_tasks(path)
    assert len(tasks) == 175
    assert sum(task.is_classification for task in tasks) == 26
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [seed_to_json(task) for task in tasks] == records


def test_seed_to_json_round_trips_through_a_file(tmp_path, seeds):
    path = tmp_path / "copy.jsonl"
    path.write_text("".join(json.dumps(seed_to_json(task)) + "\n" for task in seeds), encoding="utf-8")
    assert load_seed_tasks(path) == seeds


def test_name_defaults_to_id_and_blank_lines_and_extra_fields_are_allowed(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(
        '\n{"id": "t1", "instruction": "Say hi.", "instances": [{"input": "", "output": "Hi!"}],'
        ' "is_classification": false, "source": "me"}\n\n   \n'
        '{"id": "t2", "name": "yes_no", "instruction": "Is it raining?",'
        ' "instances": [{"input": "sun", "output": "No"},'
        ' {"input": "rain", "output": "Yes"}], "is_classification": true}\r\n',
        encoding="utf-8",
    )
    assert load_seed_tasks(path) == [
        SeedTask("t1", "t1", "Say hi.", [Instance("", "Hi!")], False),
        SeedTask("t2", "yes_no", "Is it raining?", [Instance("sun", "No"), Instance("rain", "Yes")], True),
    ]


def _line(**overrides: object) -> str:
    record = {"id": "t", "instruction": "Do it.", "instances": [{"input": "", "output": "Done."}],
              "is_classification": False}
    record.update(overrides)
    return json.dumps({key: value for key, value in record.items() if value is not ...})


GOOD = _line(id="good")

# (file content, the place the message must name ("" = the file itself), a phrase it must contain)
BAD_FILES = [
    (b"", "", "no seed tasks"),
    (b"\n  \n\n", "", "no seed tasks"),
    (f"{GOOD}\n".encode() + b'{"id": "caf\xe9"}\n', ":2", "not UTF-8 (byte 0xe9)"),
    (f"{GOOD}\n\n{{'id': 1}}\n".encode(), ":3", "invalid JSON"),
    (f"{GOOD}\n".encode() + b'{"id": "x", "instruction": "Do it.",\n', ":2", "invalid JSON"),
    (b'[{"id": "t"}]\n', "", "a JSON list; seed tasks are JSONL"),
    (f"{GOOD}\n[1, 2]\n".encode(), ":2", "expected a JSON object, got a list"),
    (f"{GOOD}\n\"text\"\n".encode(), ":2", "expected a JSON object, got a string"),
    (_line(id=...).encode(), ":1", "missing field 'id'"),
    (f"{GOOD}\n{_line(instruction=...)}".encode(), ":2", "missing field 'instruction'"),
    (_line(instances=...).encode(), ":1", "missing field 'instances'"),
    (_line(is_classification=...).encode(), ":1", "missing field 'is_classification'"),
    (_line(id=7).encode(), ":1", "field 'id' must be a string, got a number"),
    (_line(id=" ").encode(), ":1", "field 'id' is empty"),
    (_line(name=None).encode(), ":1", "field 'name' must be a string, got null"),
    (_line(instruction=["Do it."]).encode(), ":1", "field 'instruction' must be a string, got a list"),
    (_line(instruction="").encode(), ":1", "field 'instruction' is empty"),
    (_line(is_classification="yes").encode(), ":1", "field 'is_classification' must be true or false, got a string"),
    (_line(is_classification=1).encode(), ":1", "field 'is_classification' must be true or false, got a number"),
    (_line(instances={"input": "", "output": "x"}).encode(), ":1", "field 'instances' must be a list, got an object"),
    (_line(instances=[]).encode(), ":1", "field 'instances' is empty"),
    (_line(instances=["x"]).encode(), ":1", "instances[0] must be an object"),
    (_line(instances=[{"input": ""}]).encode(), ":1", "instances[0] has no 'output'"),
    (_line(instances=[{"input": "", "output": "a"}, {"output": "b"}]).encode(), ":1", "instances[1] has no 'input'"),
    (_line(instances=[{"input": "", "output": None}]).encode(), ":1", "instances[0].output must be a string, got null"),
    (_line(instances=[{"input": 3, "output": "x"}]).encode(), ":1", "instances[0].input must be a string"),
    (f"{_line(id='a')}\n{_line(id='b')}\n\n{_line(id='a')}\n".encode(), ":4",
     "duplicated id 'a', first used on line 1"),
]


@pytest.mark.parametrize(("content", "place", "phrase"), BAD_FILES, ids=[case[2] for case in BAD_FILES])
def test_bad_seed_files_fail_with_one_line_naming_file_and_line(tmp_path, content, place, phrase):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_seed_tasks(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{place}: ")
    assert phrase in message
    assert "\n" not in message


def test_missing_seed_file_and_directory(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope.jsonl'}: no such file")):
        load_seed_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path}: is a directory")):
        load_seed_tasks(tmp_path)


def test_shipped_file_is_package_data(seeds):
    from apprentice.data import SEED_TASKS, shipped

    path = shipped(SEED_TASKS)
    assert path.is_file() and path.name == "seed_tasks.jsonl"
    assert load_seed_tasks(path) == seeds
