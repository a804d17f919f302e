"""`apprentice train` end to end on tiny models: it learns, the saved model answers, LoRA merges, resume is exact,
two processes give the loss curve of one, and bad input stops before any model is loaded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_in_process

from apprentice.train.loop import TrainConfig, lr_factor, train
from apprentice.train.templates import ALPACA_TEMPLATE

LEARN = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "Eat well, sleep enough and move every day."},
    {"instruction": "Classify the sentiment.", "input": "The quick brown fox", "output": "positive"},
    {"instruction": "Write a poem about the sea.", "input": "", "output": "The sea is blue."},
    {"instruction": "Translate the sentence into French.", "input": "yes", "output": "oui"},
]
# varied lengths so that steps hold different numbers of examples; the last one is long enough to travel alone
MIXED = LEARN + [
    {"instruction": f"Summarize the article {i}.", "input": "0 1 2 3 " * i,
     "output": "The quick brown fox " * (i % 3 + 1)}
    for i in range(1, 9)
] + [{"instruction": "Write a poem about the sea.", "input": "", "output": "The sea is blue and wide. " * 12}]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _greedy(model_dir: Path, prompt: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(prompt, return_tensors="pt")
    generated = model.generate(**encoded, max_new_tokens=30, do_sample=False)
    return tokenizer.decode(generated[0, encoded.input_ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def trained(tiny_base_model_dir, tmp_path_factory) -> Path:
    """A tiny model fully fine-tuned until it has memorised LEARN."""
    tmp = tmp_path_factory.mktemp("trained")
    out = tmp / "student"
    train(TrainConfig(base=f"hf:{tiny_base_model_dir}", data=str(_write(tmp / "d.json", LEARN)), out=str(out),
                      lr=1e-2, max_steps=60, warmup_ratio=0.0, save_every=0))
    return out


def test_training_lowers_the_loss_and_the_saved_model_answers(trained, tiny_base_model_dir):
    losses = _losses(trained)
    assert len(losses) == 60 and losses[-1] < losses[0] / 5
    for example in LEARN:
        assert _greedy(trained, ALPACA_TEMPLATE.render_prompt(example["instruction"], example["input"])) == example["output"]
    manifest = json.loads((trained / "apprentice.json").read_text())
    assert manifest["template"] == ALPACA_TEMPLATE.to_json()
    assert manifest["base"] == f"hf:{tiny_base_model_dir}" and manifest["method"] == "full"
    assert manifest["token_counts"]["kept"] == 4 and manifest["token_counts"]["dropped"] == 0
    assert manifest["hyperparameters"]["max_steps"] == 60 and len(manifest["data_sha256"]) == 64
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "lr", "tokens_per_s", "tokens", "response_tokens"} <= record.keys()


def test_answer_asks_a_trained_model_with_its_template(trained, tmp_path):
    """`apprentice answer` reads the saved template and gets the learned answers back."""
    from apprentice.evaluate.answer import AnswerConfig, answer

    prompts = _write(tmp_path / "prompts.json", LEARN)
    out = tmp_path / "outputs.json"
    answer(AnswerConfig(model=f"hf:{trained}", prompts=str(prompts), out=str(out), max_tokens=30))
    records = json.loads(out.read_text())
    assert [r["output"] for r in records] == [e["output"] for e in LEARN]
    assert records[1]["instruction"] == "Classify the sentiment.\n\nThe quick brown fox"
    assert {r["generator"] for r in records} == {"student"}


def test_chat_template_training_is_answered_with_chat_turns(tiny_model_dir, tmp_path):
    """A model trained with --template chat saves that choice; `answer` then sends chat messages, which the local
    backend renders with the same chat template the training prompts came from."""
    from transformers import AutoTokenizer

    from apprentice.evaluate.answer import choose_style
    from apprentice.models.spec import parse_spec
    from apprentice.train.data import Example, render
    from apprentice.train.templates import ChatTemplate

    out = tmp_path / "chat"
    manifest = train(TrainConfig(base=f"hf:{tiny_model_dir}", data=str(_write(tmp_path / "d.json", LEARN)),
                                 out=str(out), template="chat", max_steps=2, save_every=0))
    assert manifest["template"] == {"kind": "chat"}
    style = choose_style(parse_spec(f"hf:{out}"), base_template=False)
    assert style.chat and style.template.kind == "chat"
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids, labels = render(Example("Name a colour.", "", "red"), ChatTemplate(tokenizer), tokenizer, 512)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], tokenize=False,
                                           add_generation_prompt=True)
    assert ids[: labels.count(-100)] == tokenizer(prompt, add_special_tokens=False).input_ids


LR_CASES = [(0, 2, 10, 0.0), (1, 2, 10, 0.5), (2, 2, 10, 1.0), (6, 2, 10, 0.5), (10, 2, 10, 0.0), (0, 0, 4, 1.0)]


@pytest.mark.parametrize("step,warmup,total,expected", LR_CASES)
def test_lr_schedule(step, warmup, total, expected):
    assert math.isclose(lr_factor(step, warmup, total), expected, abs_tol=1e-12)


def test_lora_merge_gives_the_adapter_logits(tiny_base_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(TrainConfig(base=f"hf:{tiny_base_model_dir}", data=str(_write(tmp_path / "d.json", LEARN)), out=str(out),
                      lora=True, lora_rank=4, lora_dropout=0.0, merge=True, lr=1e-2, max_steps=8, save_every=0))
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model_dir)
    ids = torch.tensor([[5, 17, 42, 99, 7, 250]])
    base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, out / "adapter")(ids).logits
    torch.testing.assert_close(merged(ids).logits, adapted, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, base_logits, atol=1e-3)  # training changed something
    assert _losses(out)[-1] < _losses(out)[0]


def test_resume_continues_exactly(tiny_base_model_dir, tmp_path):
    """Killed after step 5 with the newest checkpoint at step 4: the resumed run repeats step 5 and ends where an
    uninterrupted run ends (LoRA dropout on, so the restored RNG matters)."""
    from safetensors.torch import load_file

    data = str(_write(tmp_path / "d.json", MIXED))

    def config(out: str, resume: bool = False) -> TrainConfig:
        return TrainConfig(base=f"hf:{tiny_base_model_dir}", data=data, out=str(tmp_path / out), lora=True,
                           lora_rank=4, lora_dropout=0.2, lr=5e-3, max_steps=7, token_budget=512, save_every=2,
                           resume=resume)

    train(config("whole"))
    assert train(config("split"), stop_after=5) is None
    assert [p.name for p in (tmp_path / "split" / "checkpoints").iterdir()] == ["step-0000004"]
    assert len(_losses(tmp_path / "split")) == 5
    train(config("split", resume=True))
    whole, split = _losses(tmp_path / "whole"), _losses(tmp_path / "split")
    assert len(whole) == 7 and len(set(whole)) == 7
    assert split == pytest.approx(whole, rel=1e-6, abs=0)
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_two_processes_match_one(tiny_base_model_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) splits each global batch; the loss curve equals one process's."""
    data = str(_write(tmp_path / "d.json", MIXED))
    common = {"base": f"hf:{tiny_base_model_dir}", "data": data, "lr": 3e-3, "max_steps": 5, "token_budget": 512,
              "save_every": 0}
    train(TrainConfig(out=str(tmp_path / "one"), **common))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "apprentice", "train", "--base", common["base"], "--data", data, "--out", str(tmp_path / "two"),
         "--lr", "3e-3", "--max-steps", "5", "--token-budget", "512", "--save-every", "0"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert 1 in [m["examples"] for m in metrics]  # a one-example step: the second process joins with no share
    assert len(two) == 5 and two == pytest.approx(one, rel=1e-4)
    assert json.loads((tmp_path / "two" / "apprentice.json").read_text())["world_size"] == 2


def test_micro_batches_accumulate_to_the_same_step(tiny_base_model_dir, tmp_path):
    """--micro-budget splits a step into several forward passes; the step (and so the loss curve) is unchanged."""
    data = str(_write(tmp_path / "d.json", MIXED))
    common = {"base": f"hf:{tiny_base_model_dir}", "data": data, "lr": 3e-3, "max_steps": 4, "token_budget": 512,
              "max_len": 300, "save_every": 0}
    train(TrainConfig(out=str(tmp_path / "whole"), **common))
    train(TrainConfig(out=str(tmp_path / "micro"), micro_budget=300, **common))
    assert _losses(tmp_path / "micro") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-5)


BAD_INPUT = [
    ("unknown field", {"data": [{"instruction": "a", "output": "b", "outptu": "c"}]}, "item 0: unknown field 'outptu'"),
    ("missing output", {"data": [{"instruction": "a", "input": ""}]}, "item 0: missing field 'output'"),
    ("non-string", {"data": [{"instruction": "a", "output": ["b"]}]}, "field 'output' must be a string"),
    ("empty dataset", {"data": []}, "no examples"),
    ("base is not a model", {"base": "hf:{tmp}"}, "has no config.json"),
    ("template without instruction", {"template": {"prompt_input": "{input}", "prompt_no_input": "x"}},
     "has no {instruction} placeholder"),
    ("served model", {"base": "openai:gpt-4o-mini"}, "cannot train openai:gpt-4o-mini"),
    ("budget below max-len", {"args": ["--token-budget", "100"]}, "must hold one example of --max-len 512"),
]


@pytest.mark.parametrize("name,change,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_base_model_dir, tmp_path, capsys, name, change, message):
    data = _write(tmp_path / "d.json", change.get("data", LEARN))
    args = ["train", "--base", change.get("base", f"hf:{tiny_base_model_dir}").format(tmp=tmp_path),
            "--data", str(data), "--out", str(tmp_path / "out"), *change.get("args", [])]
    if "template" in change:
        args += ["--template", str(_write(tmp_path / "t.json", change["template"]))]
    code, err = run_in_process(args, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_hub_id_that_cannot_be_loaded_is_one_line(tmp_path):
    import os
    import subprocess

    data = _write(tmp_path / "d.json", LEARN)
    proc = subprocess.run([sys.executable, "-m", "apprentice", "train", "--base", "hf:no-such-org/no-such-model",
                           "--data", str(data), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fails at once, as offline does
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot load model hf:no-such-org/no-such-model" in proc.stderr
    assert not (tmp_path / "out").exists()
