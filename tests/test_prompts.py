"""Evaluation prompts: the shipped set keeps its promises, the three layouts load (the 252 user-oriented
instructions reproduce AlpacaEval's "selfinstruct" texts exactly), and bad files fail with one line naming the
file and line or item. Run: python -m pytest tests/test_prompts.py -q"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import pytest
from rouge_score import rouge_scorer

from apprentice.errors import UserError
from apprentice.evaluate.prompts import EvalPrompt, load_prompts
from apprentice.generate.seeds import load_seed_tasks

CATEGORIES = {
    "writing", "editing", "classification", "extraction", "coding", "advice", "brainstorming", "math", "planning",
}


@pytest.fixture(scope="module")
def prompts() -> list[EvalPrompt]:
    return load_prompts()


@pytest.fixture(scope="module")
def scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def worst_rouge_l(scorer: rouge_scorer.RougeScorer, pairs) -> float:
    return max(scorer.score(a, b)["rougeL"].fmeasure for a, b in pairs)


@pytest.mark.parametrize(
    ("instruction", "input_text", "text"),
    [
        ("Fix the typo.", "teh cat", "Fix the typo.\n\nteh cat"),
        ("Name a colour.", "", "Name a colour."),
        ("Sum these.", "1\n2", "Sum these.\n\n1\n2"),
    ],
)
def test_text_joins_instruction_and_input_with_a_blank_line(instruction, input_text, text):
    assert EvalPrompt(instruction, input_text).text == text


def test_shipped_prompts_sizes_and_kinds(prompts):
    assert len(prompts) >= 64
    categories = Counter(prompt.category for prompt in prompts)
    assert set(categories) == CATEGORIES
    assert min(categories.values()) >= 5
    assert 0.4 <= sum(bool(prompt.input) for prompt in prompts) / len(prompts) <= 0.6
    assert {prompt.dataset for prompt in prompts} == {"apprentice"}
    assert [prompt.id for prompt in prompts] == [f"apprentice_eval_{n}" for n in range(len(prompts))]
    assert all(len(prompt.text.split()) <= 120 for prompt in prompts)


def test_shipped_prompts_have_reference_answers():
    from apprentice.data import EVAL_INSTRUCTIONS, shipped

    records = [json.loads(line) for line in shipped(EVAL_INSTRUCTIONS).read_text(encoding="utf-8").splitlines()]
    assert all(record["instances"][0]["output"].strip() for record in records)


def test_shipped_prompts_have_no_near_duplicates(prompts, scorer):
    assert worst_rouge_l(scorer, combinations([prompt.instruction for prompt in prompts], 2)) <= 0.7


def test_shipped_prompts_are_not_near_copies_of_our_seeds(prompts, scorer):
    """The student is trained on data grown from the seeds, so the evaluation must not repeat them."""
    seeds = [task.instruction for task in load_seed_tasks()]
    assert worst_rouge_l(scorer, ((p.instruction, s) for p in prompts for s in seeds)) <= 0.7


def test_shipped_prompts_are_not_near_copies_of_the_252_set(prompts, scorer, shared_data):
    theirs = load_prompts(shared_data / "self_instruct" / "user_oriented_instructions.jsonl")
    assert worst_rouge_l(scorer, ((a.instruction, b.instruction) for a in prompts for b in theirs)) <= 0.7


def test_user_oriented_252_reproduce_alpaca_eval_selfinstruct_texts(shared_data):
    ours = load_prompts(shared_data / "self_instruct" / "user_oriented_instructions.jsonl")
    assert len(ours) == 252
    assert {prompt.dataset for prompt in ours} == {"selfinstruct"}
    assert sum(bool(prompt.input) for prompt in ours) == 208
    alpaca_eval = load_prompts(shared_data / "alpaca_eval" / "alpaca-7b.model_outputs.json")
    theirs = {prompt.text for prompt in alpaca_eval if prompt.dataset == "selfinstruct"}
    assert len(theirs) == 252
    # Every one of the 252 matches character for character: no whitespace differences to explain.
    assert len({prompt.text for prompt in ours} & theirs) == 252


def test_alpaca_eval_json_loads_all_805(shared_data):
    prompts = load_prompts(shared_data / "alpaca_eval" / "text_davinci_003.model_outputs.json")
    assert len(prompts) == 805
    assert all(prompt.input == "" for prompt in prompts)
    assert Counter(prompt.dataset for prompt in prompts)["selfinstruct"] == 252
    assert prompts[3].id == "text_davinci_003.model_outputs_3"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_alpaca_data_loads_from_json_and_jsonl(tmp_path, suffix):
    records = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a prime number.", "input": "", "output": "7"},
    ]
    path = tmp_path / f"data{suffix}"
    text = json.dumps(records, indent=2) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    assert load_prompts(path) == [
        EvalPrompt("Translate to French.", "Good morning", "data", "data_0"),
        EvalPrompt("Name a prime number.", "", "data", "data_1"),
    ]
    texts = [prompt.text for prompt in load_prompts(path)]
    assert texts == ["Translate to French.\n\nGood morning", "Name a prime number."]


def test_self_instruct_file_of_our_own_keeps_its_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"id": "q1", "instruction": "Add.", "category": "math",
                    "instances": [{"input": "2 + 2", "output": "4"}, {"input": "1 + 1", "output": "2"}]}) + "\n"
        + json.dumps({"id": "q2", "instruction": "Rhyme.", "dataset": "poems",
                      "instances": [{"input": "", "output": "moon, June"}]}) + "\n",
        encoding="utf-8",
    )
    assert load_prompts(path) == [
        EvalPrompt("Add.", "2 + 2", "mine", "q1", "math"),
        EvalPrompt("Rhyme.", "", "poems", "q2", ""),
    ]


SI = {"id": "a", "instruction": "Do it.", "instances": [{"input": "x", "output": "y"}]}


def _jsonl(*records: dict) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def _json(*records: object) -> bytes:
    return json.dumps(list(records), indent=1).encode()


# (file name, content, the place the message must name ("" = the file itself), a phrase it must contain)
BAD_FILES = [
    ("p.jsonl", b"", "", "no prompts"),
    ("p.json", b"[]", "", "no prompts"),
    ("p.jsonl", b"\n\n", "", "no prompts"),
    ("p.jsonl", _jsonl(SI) + b'{"id": "\xff"}\n', ":2", "not UTF-8 (byte 0xff)"),
    ("p.json", b'[\n {"instruction": "a"},\n {"instruction": "\x80"}\n]', ":3", "not UTF-8 (byte 0x80)"),
    ("p.jsonl", _jsonl(SI) + b"\n{nope}\n", ":3", "invalid JSON"),
    ("p.json", b'[\n {"instruction": "a"},\n {"instruction": }\n]', ":3", "invalid JSON"),
    ("p.json", b'{\n "instruction": "a"\n}\n', "", "one JSON value (an object) over several lines"),
    ("p.json", _json({"instruction": "a"}, 5), ": item 1", "expected a JSON object, got a number"),
    ("p.jsonl", _jsonl(SI) + b"[1]\n", ":2", "expected a JSON object, got a list"),
    ("p.json", _json({"instruction": "a"}, {"output": "b"}), ": item 1", "missing field 'instruction'"),
    ("p.json", _json({"instruction": ""}), ": item 0", "field 'instruction' is empty"),
    ("p.json", _json({"instruction": 3}), ": item 0", "field 'instruction' must be a string, got a number"),
    ("p.json", _json({"instruction": "a", "dataset": 1}), ": item 0", "field 'dataset' must be a string"),
    ("p.json", _json({"instruction": "a", "input": ""}, {"instruction": "b"}), ": item 1",
     "missing field 'input' (the file is read as Alpaca data"),
    ("p.json", _json({"instruction": "a", "input": None}), ": item 0", "field 'input' must be a string, got null"),
    ("p.json", _json({"instruction": "a"}, {"instruction": "b", "input": "c"}), ": item 1",
     "unexpected field 'input' (the file is read as AlpacaEval instructions"),
    ("p.jsonl", _jsonl(SI, {"id": "b", "instruction": "Do."}), ":2",
     "missing field 'instances' (the file is read as Self-Instruct evaluation JSONL"),
    ("p.jsonl", _jsonl({**SI, "id": None}), ":1", "field 'id' must be a string, got null"),
    ("p.jsonl", _jsonl({k: v for k, v in SI.items() if k != "id"}), ":1", "missing field 'id'"),
    ("p.jsonl", _jsonl({**SI, "instances": []}), ":1", "field 'instances' is empty"),
    ("p.jsonl", _jsonl({**SI, "instances": [{"input": 1, "output": ""}]}), ":1", "instances[0].input must be a string"),
    ("p.jsonl", _jsonl({**SI, "category": ["math"]}), ":1", "field 'category' must be a string, got a list"),
    ("p.jsonl", _jsonl(SI, {**SI, "id": "b"}, {**SI}), ":3", "duplicated id 'a', first used on line 1"),
    ("p.json", _json({"instruction": "a", "id": "x"}, {"instruction": "b", "id": "x"}), ": item 1",
     "duplicated id 'x', first used on item 0"),
]


@pytest.mark.parametrize(("name", "content", "place", "phrase"), BAD_FILES, ids=[case[3] for case in BAD_FILES])
def test_bad_prompt_files_fail_with_one_line_naming_file_and_place(tmp_path, name, content, place, phrase):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_prompts(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{place}: ")
    assert phrase in message
    assert "\n" not in message


def test_missing_prompt_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_prompts(tmp_path / "absent.json")
