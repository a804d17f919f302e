"""The bundled models load offline (converted once into the cache) and do what they are for. Slow: tens of seconds."""

import pytest

from apprentice.errors import UserError
from apprentice.models import Request, load_model
from apprentice.models.bundled import bundled_gguf_path

pytestmark = pytest.mark.slow


def _require(name):
    try:
        bundled_gguf_path(name)
    except UserError as exc:
        pytest.skip(str(exc))


def test_bundled_teacher_answers_a_real_prompt():
    _require("smollm2-135m-instruct")
    teacher = load_model("bundled:smollm2-135m-instruct")
    [answer] = teacher.generate([Request(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                         max_tokens=30)])
    assert "Paris" in answer.text
    assert answer.finish_reason == "stop"


def test_bundled_base_model_continues_text():
    _require("gemma-3-270m")
    base = load_model("bundled:gemma-3-270m")
    [answer] = base.generate([Request(prompt="Paris is the capital of", max_tokens=8)])
    assert "France" in answer.text


def test_bundled_teacher_runs_on_ctranslate2_with_the_reference_answers():
    from apprentice.models.base import BackendOptions
    from apprentice.models.ct2 import CT2Model

    _require("smollm2-135m-instruct")
    requests = [Request(messages=[{"role": "user", "content": q}], max_tokens=40)
                for q in ("Give three tips for staying healthy.", "What is a noun?")]
    reference = load_model("bundled:smollm2-135m-instruct", BackendOptions(engine="transformers"))
    fast = load_model("bundled:smollm2-135m-instruct", BackendOptions(engine="ctranslate2"))
    assert isinstance(fast, CT2Model) and fast.compute_type == "float32"
    assert [c.text for c in fast.generate(requests)] == [c.text for c in reference.generate(requests)]
    assert isinstance(load_model("bundled:smollm2-135m-instruct"), CT2Model)  # auto on a CPU
