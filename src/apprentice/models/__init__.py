"""Model specs and backends: one generation interface over OpenAI-compatible servers and local transformers models.

    from apprentice.models import load_model, Request
    model = load_model("bundled:smollm2-135m-instruct")
    [completion] = model.generate([Request(messages=[{"role": "user", "content": "Hi"}])])
"""

from apprentice.models.base import BackendOptions, Completion, Model, Request
from apprentice.models.spec import ModelSpec, parse_spec

__all__ = ["BackendOptions", "Completion", "Model", "ModelSpec", "Request", "load_model", "parse_spec"]


def load_model(spec: ModelSpec | str, options: BackendOptions | None = None) -> Model:
    """Build the backend for a spec: HTTP for `openai:`, transformers for the rest."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    options = options or BackendOptions()
    if spec.kind == "openai":
        from apprentice.models.http import OpenAIModel

        return OpenAIModel.from_spec(spec, options)
    from apprentice.models.local import LocalModel  # imports torch: only when a local model is asked for

    return LocalModel.from_spec(spec, options)

