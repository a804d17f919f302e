"""The ctranslate2 engine against the transformers reference on tiny models: the same greedy answers in float32,
stop strings, max tokens, seeds, log-probabilities, the fallbacks to transformers, and the conversion cache."""

import json

import pytest

from apprentice.errors import UserError
from apprentice.models import Request, load_model
from apprentice.models.base import BackendOptions
from apprentice.models.ct2 import CT2Model, plan_batches
from apprentice.models.ct2_convert import MARKER, cache_target
from apprentice.models.local import LocalModel
from tiny import build_tiny_model

PROMPTS = ["Give three tips", "The quick brown fox jumps over", "Write a poem about the sea and the sky", "A",
           "Summarize the article. Translate the sentence into French. Classify the sentiment."]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A conversion cache of this module's own, so tiny models stay out of the user's."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("APPRENTICE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def pair(tiny_model_dir, cache):
    """The reference and the fast engine (float32) over the same tiny chat model."""
    spec = f"hf:{tiny_model_dir}"
    reference = load_model(spec, BackendOptions(batch_size=4, engine="transformers"))
    fast = load_model(spec, BackendOptions(batch_size=4, engine="ctranslate2"))
    assert isinstance(reference, LocalModel) and isinstance(fast, CT2Model)
    return reference, fast


def same(reference, fast, requests):
    expected, got = reference.generate(requests), fast.generate(requests)
    for a, b in zip(expected, got):
        assert (b.text, b.finish_reason, b.prompt_tokens, b.completion_tokens) == \
               (a.text, a.finish_reason, a.prompt_tokens, a.completion_tokens)
    return got


def test_greedy_answers_equal_the_reference_for_plain_and_chat_prompts(pair):
    reference, fast = pair
    plain = [Request(prompt=p, max_tokens=m) for p, m in zip(PROMPTS, (12, 3, 20, 1, 9))]
    chat = [Request(messages=[{"role": "user", "content": p}], max_tokens=10) for p in PROMPTS]
    got = same(reference, fast, plain + chat)
    assert [c.finish_reason for c in got[:5]] == ["length"] * 5
    assert [c.completion_tokens for c in got[:5]] == [12, 3, 20, 1, 9]  # each row's own limit, in one batch


def test_stop_strings_end_answers_where_the_reference_does(pair):
    reference, fast = pair
    requests = [Request(prompt=p, max_tokens=24, stop=("e", " t")) for p in PROMPTS]
    requests += [Request(messages=[{"role": "user", "content": p}], max_tokens=24, stop=("\n\n",)) for p in PROMPTS]
    got = same(reference, fast, requests)
    assert any(c.finish_reason == "stop" for c in got) and all("\n\n" not in c.text for c in got[5:])


def test_log_probabilities_equal_the_reference(pair):
    reference, fast = pair
    requests = [Request(messages=[{"role": "user", "content": p}], max_tokens=4, logprobs=5) for p in PROMPTS]
    for a, b in zip(reference.generate(requests), fast.generate(requests)):
        assert list(b.top_logprobs) == list(a.top_logprobs)
        assert all(abs(b.top_logprobs[t] - v) < 1e-4 for t, v in a.top_logprobs.items())


def test_seeded_sampling_is_reproducible_and_the_seed_matters(pair):
    _, fast = pair

    def sample(seed):
        return [c.text for c in fast.generate([Request(prompt=p, max_tokens=10, temperature=1.0, seed=seed)
                                               for p in PROMPTS[:2]])]

    first = sample(7)
    assert sample(7) == first
    assert len({tuple(sample(s)) for s in range(8, 12)} | {tuple(first)}) > 1


def test_presence_penalty_runs_on_transformers_with_one_line(pair, capfd):
    reference, fast = pair
    capfd.readouterr()
    requests = [Request(prompt=p, max_tokens=16, presence_penalty=2.0) for p in PROMPTS]
    same(reference, fast, requests + [Request(prompt="The quick", max_tokens=8)])
    same(reference, fast, requests)
    lines = [line for line in capfd.readouterr().err.splitlines() if "run on transformers" in line]
    assert len(lines) == 1 and "presence_penalty" in lines[0]


def test_sliding_window_model_converts_and_long_prompts_fall_back(tmp_path, cache, capfd):
    # Gemma 3 shapes with a window of 16 tokens: ctranslate2 decodes past the window as transformers does, but
    # reads a longer prompt differently, so those prompts go to transformers
    spec = f"hf:{build_tiny_model(tmp_path / 'gemma', arch='gemma3', sliding_window=16, query_pre_attn_scalar=8)}"
    reference = load_model(spec, BackendOptions(engine="transformers"))
    fast = load_model(spec, BackendOptions(engine="ctranslate2"))
    assert isinstance(fast, CT2Model) and fast.prefill_limit == 17
    capfd.readouterr()
    long = "The quick brown fox jumps over the lazy dog. " * 3
    same(reference, fast, [Request(prompt=p, max_tokens=30) for p in PROMPTS[:4]])  # up to 16 tokens
    assert fast._reference is None and capfd.readouterr().err == ""
    same(reference, fast, [Request(prompt=p, max_tokens=30) for p in PROMPTS[:4] + [long]])
    assert "prompts over 17 tokens" in capfd.readouterr().err and fast._reference is not None


def test_unsupported_model_falls_back_with_one_line(tmp_path, cache, capfd):
    # ctranslate2's Gemma 3 converter takes query_pre_attn_scalar to be the head size; here it is not
    spec = f"hf:{build_tiny_model(tmp_path / 'gemma', arch='gemma3')}"
    capfd.readouterr()
    model = load_model(spec, BackendOptions())
    assert isinstance(model, LocalModel)
    lines = [line for line in capfd.readouterr().err.splitlines() if "runs on transformers" in line]
    assert len(lines) == 1 and "different logits" in lines[0]
    load_model(spec, BackendOptions())  # the verdict is cached: no second conversion, the same one line
    assert "converting" not in capfd.readouterr().err
    with pytest.raises(UserError, match="--engine ctranslate2-int8: cannot run"):
        load_model(spec, BackendOptions(engine="ctranslate2-int8"))


def test_unknown_engine_is_a_user_error(tiny_model_dir):
    with pytest.raises(UserError, match="unknown engine 'fast'"):
        load_model(f"hf:{tiny_model_dir}", BackendOptions(engine="fast"))


@pytest.mark.parametrize("damage", ["truncated weights", "no marker"])
def test_a_damaged_conversion_is_rebuilt(tmp_path, monkeypatch, capfd, damage):
    monkeypatch.setenv("APPRENTICE_CACHE", str(tmp_path / "cache"))
    model_dir = build_tiny_model(tmp_path / "model")
    spec = f"hf:{model_dir}"
    expected = load_model(spec, BackendOptions(engine="ctranslate2")).generate([Request(prompt="A", max_tokens=5)])
    target = cache_target(model_dir)
    if damage == "no marker":  # killed before the marker was written
        (target / MARKER).unlink()
    else:
        weights = target / "model.bin"
        weights.write_bytes(weights.read_bytes()[:1000])
    capfd.readouterr()
    again = load_model(spec, BackendOptions(engine="ctranslate2")).generate([Request(prompt="A", max_tokens=5)])
    assert "incomplete or damaged: converting it again" in capfd.readouterr().err
    assert again[0].text == expected[0].text
    assert json.loads((target / MARKER).read_text())["files"]["model.bin"] == (target / "model.bin").stat().st_size


def test_lora_adapter_is_merged_then_converted(tiny_model_dir, tmp_path, cache):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    LocalModel.from_dir(str(tiny_model_dir), "base").tokenizer.save_pretrained(adapter)
    spec = f"hf:{adapter}"
    requests = [Request(prompt=p, max_tokens=8) for p in PROMPTS]
    reference = load_model(spec, BackendOptions(engine="transformers"))
    fast = load_model(spec, BackendOptions(engine="ctranslate2"))
    assert isinstance(fast, CT2Model)
    same(reference, fast, requests)
    base = load_model(f"hf:{tiny_model_dir}", BackendOptions(engine="ctranslate2"))
    assert [c.text for c in base.generate(requests)] != [c.text for c in fast.generate(requests)]


def test_int8_engine_answers_every_request(tiny_model_dir, cache):
    model = load_model(f"hf:{tiny_model_dir}", BackendOptions())  # auto on a CPU: int8 weights
    assert isinstance(model, CT2Model) and model.compute_type == "int8"
    got = model.generate([Request(prompt=p, max_tokens=6) for p in PROMPTS])
    assert [c.completion_tokens for c in got] == [6] * len(PROMPTS) and model.stats["completion_tokens"] == 30


@pytest.mark.parametrize("lengths, max_tokens, batch_size, expected", [
    ([10, 11, 12, 13], 64, 2, [[0, 1], [2, 3]]),
    ([10, 11, 40, 41], 64, 8, [[0, 1], [2, 3]]),  # 30 more prompt tokens than 64 / 4 allows
    ([100, 104, 109, 300], 16, 8, [[0, 1], [2], [3]]),  # a judge: 16 tokens to write allow 8 more to read
    ([5], 1, 4, [[0]]),
])
def test_plan_batches(lengths, max_tokens, batch_size, expected):
    assert plan_batches(lengths, max_tokens, batch_size) == expected
