"""Which engine runs a local model: transformers (the reference) or CTranslate2 (several times faster on a CPU).

`BackendOptions.engine` (`--engine`) chooses:

- `auto` (default): on a CPU, ctranslate2 with int8 weights when the model converts and computes what transformers
  computes; otherwise transformers, with one line saying why. On CUDA, transformers (bfloat16 batches).
- `transformers`: always transformers' `generate`, the reference path.
- `ctranslate2`: ctranslate2 in transformers' own precision (float32 on CPU): the same greedy answers.
- `ctranslate2-int8`: ctranslate2 with int8 weights: fastest on a CPU; greedy answers drift from float32 ones
  after some tokens (docs/BENCHMARKS.md measures by how much).

Forcing a ctranslate2 engine on a model it cannot run is an error, not a silent fallback.
"""

from __future__ import annotations

import importlib.util
import sys

from apprentice.errors import UserError
from apprentice.models.base import BackendOptions, Model
from apprentice.models.spec import ModelSpec, local_model_dir

ENGINES = ("auto", "transformers", "ctranslate2", "ctranslate2-int8")
ENGINE_HELP = ("Local models: auto (ctranslate2 int8 on a CPU when the model supports it, else transformers), "
               "transformers, ctranslate2 (float32: transformers' answers) or ctranslate2-int8.")


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


def load_local(spec: ModelSpec, options: BackendOptions) -> Model:
    """The local backend `options.engine` asks for (see the module docstring)."""
    from apprentice.models.local import LocalModel, pick_device

    engine = check_engine(options.engine)
    path = local_model_dir(spec)
    if engine == "transformers" or (engine == "auto" and pick_device(options.device) != "cpu"):
        return LocalModel.from_dir(path, str(spec), options)
    if importlib.util.find_spec("ctranslate2") is None:
        reason = "ctranslate2 is not installed (pip install ctranslate2)"
    else:
        from apprentice.models.ct2 import CT2Model
        from apprentice.models.ct2_convert import Unsupported

        try:
            return CT2Model.from_dir(path, str(spec), options, quantize=engine != "ctranslate2")
        except Unsupported as exc:
            reason = str(exc)
    if engine != "auto":
        raise UserError(f"--engine {engine}: cannot run {spec}: {reason}")
    print(f"{spec} runs on transformers: {reason}", file=sys.stderr, flush=True)
    return LocalModel.from_dir(path, str(spec), options)
