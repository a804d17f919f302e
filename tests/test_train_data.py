"""Templates, strict data loading, masking and batching for `apprentice train` (pure functions, table-driven)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from apprentice.errors import UserError
from apprentice.train.batching import BatchPlan, pack, share
from apprentice.train.data import IGNORE, Example, assemble, load_examples, render, tokenize
from apprentice.train.templates import (
    ALPACA_TEMPLATE,
    ChatTemplate,
    TextTemplate,
    load_template_file,
    resolve_template,
    saved_template,
    template_from_json,
)

# --- templates ---------------------------------------------------------------------------------------------------

ALPACA_CASES = [
    ("no input", "Name a colour.", "",
     ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
      "\n\n### Instruction:\nName a colour.\n\n### Response:")),
    ("with input", "Translate.", "bonjour",
     ("Below is an instruction that describes a task, paired with an input that provides further context. Write a "
      "response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n### Input:\nbonjour"
      "\n\n### Response:")),
    ("braces in text stay literal", "Fill {input} in {x}", "{instruction}",
     ("Below is an instruction that describes a task, paired with an input that provides further context. Write a "
      "response that appropriately completes the request.\n\n### Instruction:\nFill {input} in {x}\n\n"
      "### Input:\n{instruction}\n\n### Response:")),
]


@pytest.mark.parametrize("name,instruction,input,expected", ALPACA_CASES, ids=[c[0] for c in ALPACA_CASES])
def test_alpaca_template_text(name, instruction, input, expected):
    assert ALPACA_TEMPLATE.render_prompt(instruction, input) == expected


TEMPLATE_FILE_CASES = [
    ("toml ok", "t.toml",
     'prompt_input = "Q: {instruction}\\n{input}\\nA:"\nprompt_no_input = "Q: {instruction}\\nA:"\n',
     None),
    ("json ok with alpaca-lora extras", "t.json",
     json.dumps({"description": "x", "prompt_input": "{instruction} | {input} =>",
                 "prompt_no_input": "{instruction} =>",
                 "response_split": "=>"}), None),
    ("no instruction placeholder", "t.toml", 'prompt_input = "{input}"\nprompt_no_input = "Q:"\n',
     "has no {instruction} placeholder"),
    ("input template without input", "t.json",
     json.dumps({"prompt_input": "{instruction}", "prompt_no_input": "{instruction}"}),
     "'prompt_input' has no {input} placeholder"),
    ("missing field", "t.json", json.dumps({"prompt_input": "{instruction}{input}"}), "missing 'prompt_no_input'"),
    ("unknown field", "t.json", json.dumps({"prompt_input": "{instruction}{input}", "prompt_no_input": "{instruction}",
                                            "promt": 1}), "unknown field 'promt'"),
    ("not a string", "t.json", json.dumps({"prompt_input": 3, "prompt_no_input": "{instruction}"}), "must be a string"),
    ("bad toml", "t.toml", "prompt_input = ", "cannot parse"),
]


@pytest.mark.parametrize("name,filename,text,error", TEMPLATE_FILE_CASES, ids=[c[0] for c in TEMPLATE_FILE_CASES])
def test_custom_template_files(tmp_path, name, filename, text, error):
    path = tmp_path / filename
    path.write_text(text)
    if error is None:
        template = load_template_file(path)
        assert template.kind == "custom"
        assert "Do it" in template.render_prompt("Do it", "") and "ctx" not in template.render_prompt("Do it", "")
        assert "Do it" in template.render_prompt("Do it", "ctx") and "ctx" in template.render_prompt("Do it", "ctx")
        assert template_from_json(template.to_json(), None, "x") == template
    else:
        with pytest.raises(UserError, match=error) as info:
            load_template_file(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_chat_template_uses_the_tokenizer(tiny_model_dir, tiny_base_model_dir):
    from transformers import AutoTokenizer

    chat_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = resolve_template("chat", chat_tok)
    assert isinstance(template, ChatTemplate)
    assert template.render_prompt("Name a colour.", "red or blue") == (
        "<|im_start|>user\nName a colour.\n\nred or blue<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(UserError, match="no chat template"):
        resolve_template("chat", AutoTokenizer.from_pretrained(tiny_base_model_dir))


def test_saved_template_round_trip(tmp_path):
    custom = TextTemplate("{instruction}/{input}:", "{instruction}:", kind="custom")
    assert saved_template(tmp_path, None) is None
    (tmp_path / "apprentice.json").write_text(json.dumps({"template": custom.to_json()}))
    assert saved_template(tmp_path, None) == custom
    (tmp_path / "apprentice.json").write_text(json.dumps({"template": ALPACA_TEMPLATE.to_json()}))
    assert saved_template(tmp_path, None) is ALPACA_TEMPLATE


# --- data loading --------------------------------------------------------------------------------------------------

GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi."}
BAD_DATA_CASES = [
    ("unknown field", [GOOD, {**GOOD, "ouput": "x"}], "item 1: unknown field 'ouput'"),
    ("missing output", [{"instruction": "Say hi.", "input": ""}], "item 0: missing field 'output'"),
    ("missing instruction", [{"output": "x"}], "item 0: missing field 'instruction'"),
    ("non-string output", [{"instruction": "a", "output": 3}], "item 0: field 'output' must be a string"),
    ("non-string input", [{"instruction": "a", "input": None, "output": "b"}], "field 'input' must be a string"),
    ("empty instruction", [{"instruction": " ", "output": "b"}], "field 'instruction' is empty"),
    ("not an object", [GOOD, "text"], "item 1: expected a JSON object"),
    ("empty dataset", [], "no examples"),
]


@pytest.mark.parametrize("name,records,error", BAD_DATA_CASES, ids=[c[0] for c in BAD_DATA_CASES])
def test_bad_data_is_one_line_naming_file_and_item(tmp_path, name, records, error):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    with pytest.raises(UserError, match=error) as info:
        load_examples(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_jsonl_with_generate_metadata_loads_and_errors_name_the_line(tmp_path):
    meta = {"teacher": "openai:x", "strategy": "self-instruct", "seed_ids": ["a"], "example_ids": [], "job": 3,
            "parent_job": None, "request_id": "abc", "most_similar": "Say hello.", "most_similar_score": 0.4}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({**GOOD, **meta}) + "\n\n" + json.dumps({"instruction": "b", "output": "c"}) + "\n")
    assert load_examples(path) == [Example("Say hi.", "", "Hi."), Example("b", "", "c")]
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"instruction": "b", "outptu": "c"}) + "\n")
    with pytest.raises(UserError, match=r"data.jsonl:2: unknown field 'outptu'"):
        load_examples(path)


# --- masking -------------------------------------------------------------------------------------------------------

M = IGNORE
ASSEMBLE_CASES = [
    # name, prompt, response (with EOS), max_len, ids, labels
    ("fits", [1, 2, 3], [7, 8, 0], 10, [1, 2, 3, 7, 8, 0], [M, M, M, 7, 8, 0]),
    ("exactly max_len", [1, 2], [7, 0], 4, [1, 2, 7, 0], [M, M, 7, 0]),
    ("response cut, EOS lost", [1, 2], [7, 8, 0], 3, [1, 2, 7], [M, M, 7]),
    ("prompt fills max_len", [1, 2, 3], [7, 0], 3, [1, 2, 3], [M, M, M]),
    ("prompt longer than max_len", [1, 2, 3, 4], [7, 0], 2, [1, 2], [M, M]),
    ("empty output is just EOS", [5], [0], 8, [5, 0], [M, 0]),
]


@pytest.mark.parametrize("name,prompt,response,max_len,ids,labels", ASSEMBLE_CASES, ids=[c[0] for c in ASSEMBLE_CASES])
def test_assemble_masks_the_prompt(name, prompt, response, max_len, ids, labels):
    assert assemble(prompt, response, max_len) == (ids, labels)


def test_render_with_a_real_tokenizer(tiny_base_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_model_dir)
    example = Example("Give three tips for staying healthy.", "", "Eat well.")
    ids, labels = render(example, ALPACA_TEMPLATE, tok, 512)
    prompt_ids = tok(ALPACA_TEMPLATE.render_prompt(example.instruction, "")).input_ids
    response_ids = tok("Eat well.", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert ids == prompt_ids + response_ids
    assert labels == [IGNORE] * len(prompt_ids) + response_ids
    assert tok.decode(ids) == ALPACA_TEMPLATE.render_prompt(example.instruction, "") + "Eat well.<|endoftext|>"


def test_tokenize_drops_and_counts(tiny_base_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_model_dir)
    short = Example("Say hi.", "", "Hi.")
    long_prompt = Example("Say hi. " * 200, "", "Hi.")
    prompt_len = len(tok(ALPACA_TEMPLATE.render_prompt(short.instruction, "")).input_ids)
    response_len = len(tok("Hi.", add_special_tokens=False).input_ids) + 1
    data = tokenize([short, long_prompt, short], ALPACA_TEMPLATE, tok, max_len=prompt_len + response_len - 1)
    counts = data.counts
    assert (counts.examples, counts.kept, counts.dropped, counts.truncated) == (3, 2, 1, 2)
    assert counts.prompt_tokens == 2 * prompt_len
    assert counts.response_tokens == 2 * (response_len - 1)
    assert all(labels[-1] != IGNORE for _, labels in data.sequences)


# --- batching ------------------------------------------------------------------------------------------------------

PACK_CASES = [
    ("one batch", [3, 2, 1], 9, [[0, 1, 2]]),
    ("budget counts padding", [5, 1, 1, 1], 8, [[0], [1, 2, 3]]),
    ("longest first, ties by index", [2, 4, 2, 4], 8, [[1, 3], [0, 2]]),
    ("too long travels alone", [12, 3, 3], 8, [[0], [1, 2]]),
]


@pytest.mark.parametrize("name,lengths,budget,expected", PACK_CASES, ids=[c[0] for c in PACK_CASES])
def test_pack(name, lengths, budget, expected):
    assert pack(range(len(lengths)), lengths, budget) == expected


def test_batch_plan_covers_each_example_once_per_epoch_within_budget():
    import random

    rng = random.Random(1)
    lengths = [rng.randint(5, 300) for _ in range(500)]
    plan = BatchPlan.build(lengths, token_budget=1024, seed=7)
    epoch0 = [plan.batch(s) for s in range(plan.steps_per_epoch)]
    epoch1 = [plan.batch(s) for s in range(plan.steps_per_epoch, 2 * plan.steps_per_epoch)]
    assert Counter(i for b in epoch0 for i in b) == Counter(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 1024 for b in epoch0)
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1  # same batches, new order
    assert BatchPlan.build(lengths, 1024, seed=7).batch(5) == plan.batch(5)  # deterministic
    assert BatchPlan.build(lengths, 1024, seed=8).order(0) != plan.order(0)


def test_shares_split_a_batch_exactly():
    batch = (9, 4, 7, 1, 3)
    assert [share(batch, r, 2) for r in range(2)] == [[9, 7, 3], [4, 1]]
    assert sorted(i for r in range(3) for i in share(batch, r, 3)) == sorted(batch)
    assert share((5,), 1, 2) == []
