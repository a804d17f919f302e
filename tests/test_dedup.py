"""`apprentice dedup` through the real command line (a subprocess), and its pure core `dedup_records`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from apprentice.generate.dedup import AGAINST, INPUT, Removal, dedup_records

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat, sleep, move.", "id": "a"},
    {"instruction": "Give three tips for staying healthy!", "input": "", "output": "Move.", "id": "b"},
    {"instruction": "Translate the sentence into French.", "input": "I like cats.", "output": "J'aime les chats."},
    {"instruction": "Give me three tips for staying healthy.", "input": "", "output": "Sleep.", "id": "d"},
    {"instruction": "Write a haiku about the autumn rain.", "input": "", "output": "Rain on red leaves..."},
    {"instruction": "Name the capital city of Australia.", "input": "", "output": "Canberra."},
]
SEEDS = [
    {"id": "s0", "instruction": "Write a haiku about autumn rain.", "instances": [], "is_classification": False},
    {"id": "s1", "instruction": "Explain how vaccines work.", "instances": [], "is_classification": False},
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", "dedup", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_dedup_records_matches_the_brute_force_rule():
    instructions = [record["instruction"] for record in RECORDS]
    result = dedup_records(instructions, against=[seed["instruction"] for seed in SEEDS])
    assert result.kept == [0, 2, 5]
    near = SCORER.score("Give three tips for staying healthy!", "Give three tips for staying healthy.")
    haiku = SCORER.score("Write a haiku about the autumn rain.", "Write a haiku about autumn rain.")
    assert result.removed == [
        Removal(1, instructions[1], near["rougeL"].fmeasure, INPUT, 0, instructions[0]),
        Removal(3, instructions[3], SCORER.score(instructions[3], instructions[0])["rougeL"].fmeasure, INPUT, 0,
                instructions[0]),
        Removal(4, instructions[4], haiku["rougeL"].fmeasure, AGAINST, 0, SEEDS[0]["instruction"]),
    ]
    seen = []
    dedup_records(["one two three four"] * 600, progress=seen.append)
    assert seen == [256, 512, 600]


def test_cli_json_in_json_out_with_seeds_and_removed_report(tmp_path):
    data = write_json(tmp_path / "data.json", RECORDS)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    out, removed = tmp_path / "kept.json", tmp_path / "removed.jsonl"
    done = run(str(data), "--out", str(out), "--against", str(seeds), "--removed", str(removed))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == [RECORDS[0], RECORDS[2], RECORDS[5]]  # original order, all fields kept
    report = [json.loads(line) for line in removed.read_text().splitlines()]
    assert [(row["index"], row["matched_source"], row["matched_index"]) for row in report] == [
        (1, "input", 0), (3, "input", 0), (4, "against", 0)]
    assert all(row["score"] > 0.7 for row in report)
    assert report[2]["matched_instruction"] == SEEDS[0]["instruction"]
    summary = " ".join(done.stdout.split())
    assert "kept 3 of 6, removed 3 (2 close to an earlier record, 1 to --against)" in summary


def test_cli_jsonl_in_jsonl_out_and_threshold(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    out = tmp_path / "kept.jsonl"
    assert run(str(data), "--out", str(out)).returncode == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORDS[i] for i in (0, 2, 4, 5)]
    # Identical instructions score exactly 1.0, which is not above a threshold of 1.
    assert run(str(data), "--out", str(out), "--threshold", "1").returncode == 0
    assert len(out.read_text().splitlines()) == len(RECORDS)
    # At 0 any shared word is too close: the haiku and the capital share "the" with the French translation.
    assert run(str(data), "--out", str(out), "--threshold", "0").returncode == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORDS[0], RECORDS[2]]


def test_cli_real_seed_tasks_dedup_against_themselves(shared_data, tmp_path):
    seeds = shared_data / "self_instruct" / "seed_tasks.jsonl"
    out = tmp_path / "kept.json"
    done = run(str(seeds), "--out", str(out), "--against", str(seeds))
    assert done.returncode == 0
    assert json.loads(out.read_text()) == []  # every seed scores 1.0 against itself
    # Even the 175 human-written seeds hold two pairs above 0.7 ("Write a cover letter / a conversation based on
    # the given facts."); Stanford's loop with rouge_score finds the same.
    done = run(str(seeds), "--out", str(out))
    assert done.returncode == 0
    kept_tokens: list[list[str]] = []
    expected = []
    for line in seeds.read_text().splitlines():
        tokens = SCORER._tokenizer.tokenize(json.loads(line)["instruction"])
        if all(rouge_scorer._score_lcs(tokens, other).fmeasure <= 0.7 for other in kept_tokens):
            kept_tokens.append(tokens)
            expected.append(json.loads(line)["id"])
    assert [record["id"] for record in json.loads(out.read_text())] == expected
    assert len(expected) == 173


@pytest.mark.parametrize("name,content,message", [
    ("bad.jsonl", '{"instruction": "ok one two"}\n{"instruction": \n', "bad.jsonl:2: invalid JSON"),
    ("missing.jsonl", '{"instruction": "ok one two"}\n{"output": "x"}\n',
     "missing.jsonl:2: missing field 'instruction'"),
    ("type.json", '[{"instruction": "fine"}, {"instruction": 3}]',
     "type.json: item 1: field 'instruction' must be a string"),
    ("list.jsonl", '{"instruction": "ok"}\n["not", "an", "object"]\n', "list.jsonl:2: expected a JSON object"),
    ("empty.json", "", "empty.json: no records"),
    ("emptylist.json", "[]", "emptylist.json: no records"),
    ("object.json", '{"instruction": "a",\n "input": ""}', "one JSON value (an object) over several lines"),
    ("latin1.jsonl", b'{"instruction": "caf\xe9"}\n', "latin1.jsonl:1: not UTF-8"),
    ("nan.jsonl", '{"instruction": "ok one two"}\n{"instruction": "x y z w", "score": NaN}\n',
     "nan.jsonl:2: invalid JSON (NaN is not a JSON value"),
    ("inf.json", '[{"instruction": "ok one two", "score": -Infinity}]', "inf.json: invalid JSON (-Infinity is not"),
])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "kept.json"
    done = run(str(path), "--out", str(out))
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".kept.json.*"))


def test_cli_bad_against_file_and_missing_paths(tmp_path):
    data = write_json(tmp_path / "data.json", RECORDS)
    out = tmp_path / "kept.json"
    out.write_text("previous")
    bad_seeds = tmp_path / "seeds.jsonl"
    bad_seeds.write_text('{"id": "s0", "instruction": "fine"}\n{"id": "s1"}\n')
    done = run(str(data), "--out", str(out), "--against", str(bad_seeds))
    assert done.returncode == 2 and "seeds.jsonl:2: missing field 'instruction'" in done.stderr
    assert out.read_text() == "previous"  # untouched
    done = run(str(tmp_path / "nope.json"), "--out", str(out))
    assert done.returncode == 2 and "nope.json: no such file" in done.stderr
    done = run(str(data), "--out", str(tmp_path / "no" / "such" / "kept.json"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = run(str(data), "--out", str(out), "--threshold", "1.5")
    assert done.returncode == 2 and "threshold" in done.stderr
