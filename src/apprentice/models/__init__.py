"""Model specs and backends: one generation interface over OpenAI-compatible servers and local transformers models.

    from apprentice.models import load_model, Request
    model = load_model("bundled:smollm2-135m-instruct")
    [completion] = model.generate([Request(messages=[{"role": "user", "content": "Hi"}])])
"""

from pathlib import Path

from apprentice.errors import UserError
from apprentice.models.base import BackendOptions, Completion, Model, Request
from apprentice.models.spec import ModelSpec, parse_spec

__all__ = ["BackendOptions", "Completion", "Model", "ModelSpec", "Request", "load_model", "parse_spec"]


def load_model(spec: ModelSpec | str, options: BackendOptions | None = None, record: Path | None = None) -> Model:
    """Build the backend for a spec: HTTP for `openai:` (the Batch API with `options.batch`, which keeps its
    batches in the call record at `record`), a local engine for the rest (models/engine.py)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    options = options or BackendOptions()
    if options.batch:
        if spec.kind != "openai":
            raise UserError(f"--batch needs an openai: model (the Batch API); {spec} is a local model")
        if record is None:
            raise ValueError("a Batch API model needs a call record to keep its batches in")
        from apprentice.models.batch import BatchModel

        return BatchModel.from_spec(spec, options, record)
    if spec.kind == "openai":
        from apprentice.models.http import OpenAIModel

        return OpenAIModel.from_spec(spec, options)
    from apprentice.models.engine import load_local  # imports torch: only when a local model is asked for

    return load_local(spec, options)

