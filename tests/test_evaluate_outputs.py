"""Loading and joining AlpacaEval model output files: the happy path and every bad-file error."""

import json

import pytest

from apprentice.errors import UserError
from apprentice.evaluate.outputs import ModelOutput, Pair, join_outputs, load_outputs


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_load_fills_defaults_from_the_file_name(tmp_path):
    path = write(tmp_path / "student.model_outputs.json", [
        {"instruction": "Say hi", "output": "hi", "generator": "s", "dataset": "d"},
        {"instruction": "Say bye", "output": "bye"},
    ])
    assert load_outputs(path) == [
        ModelOutput("Say hi", "hi", "s", "d"),
        ModelOutput("Say bye", "bye", "student", None),
    ]


@pytest.mark.parametrize("content, message", [
    ("{not json", "bad.json:1:2: not JSON"),
    ({"instruction": "x"}, "found a JSON dict"),
    ([], "the outputs list is empty"),
    (["text"], "item 0 is a str"),
    ([{"instruction": "a", "output": "b"}, {"output": "c"}], "item 1 has no 'instruction'"),
    ([{"instruction": "a"}], "item 0 has no 'output'"),
    ([{"instruction": "a", "output": 3}], "item 0: 'output' must be a string, found int"),
    ([{"instruction": "a", "output": "b", "generator": 1}], "item 0: 'generator' must be a string"),
    ([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "c"}],
     "item 1 repeats the instruction of item 0: 'a'"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(UserError) as info:
        load_outputs(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_outputs(tmp_path / "absent.json")


def outputs(generator, instructions, dataset=None):
    return [ModelOutput(i, f"{generator} answers {i}", generator, dataset) for i in instructions]


def test_join_pairs_in_a_order_whatever_b_order():
    pairs = join_outputs(outputs("a", ["x", "y", "z"], "ds"), outputs("b", ["z", "x", "y"]))
    assert [p.instruction for p in pairs] == ["x", "y", "z"]
    assert pairs[1] == Pair("y", "a answers y", "b answers y", "a", "b", "ds")


def test_join_takes_the_dataset_from_b_when_a_has_none():
    [pair] = join_outputs(outputs("a", ["x"]), outputs("b", ["x"], "koala"))
    assert pair.dataset == "koala"


def test_join_mismatch_reports_counts_and_first_missing():
    a = outputs("a", ["only a 1", "both 1", "only a 2", "both 2"])
    b = outputs("b", ["both 2", "only b", "both 1"])
    with pytest.raises(UserError) as info:
        join_outputs(a, b, "A.json", "B.json")
    assert str(info.value) == (
        "A.json and B.json answer different instructions: 2 only in A.json, 1 only in B.json, 2 in both; "
        "first only in A.json: 'only a 1'"
    )


def test_join_the_shared_alpaca_eval_files(shared_data):
    folder = shared_data / "alpaca_eval"
    pairs = join_outputs(load_outputs(folder / "alpaca-7b.model_outputs.json"),
                         load_outputs(folder / "text_davinci_003.model_outputs.json"))
    assert len(pairs) == 805
    assert {p.generator_a for p in pairs} == {"alpaca-7b"}
    assert {p.generator_b for p in pairs} == {"text_davinci_003"}
    assert sum(p.dataset == "selfinstruct" for p in pairs) == 252
