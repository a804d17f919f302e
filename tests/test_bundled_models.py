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
