"""Model specs and backends: one generation interface over OpenAI-compatible servers and local transformers models.

    from apprentice.models import load_model, Request
    model = load_model("bundled:smollm2-135m-instruct")
    [completion] = model.generate([Request(messages=[{"role": "user", "content": "Hi"}])])
"""

from apprentice.models.base import Completion, Model, Request
from apprentice.models.spec import ModelSpec, load_model, parse_spec

__all__ = ["Completion", "Model", "ModelSpec", "Request", "load_model", "parse_spec"]
