"""Data files shipped with apprentice, all written for the project:

* `seed_tasks.jsonl`: the default seed tasks for `apprentice generate` (Self-Instruct JSONL; see docs/USAGE.md),
  loaded by `apprentice.generate.seeds.load_seed_tasks()`.
* `eval_instructions.jsonl`: the default evaluation prompts for `apprentice answer` (Self-Instruct evaluation JSONL
  with a `category` per instruction), loaded by `apprentice.evaluate.prompts.load_prompts()`.

    python -c "from apprentice.data import shipped; print(shipped('seed_tasks.jsonl'))"
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SEED_TASKS = "seed_tasks.jsonl"
EVAL_INSTRUCTIONS = "eval_instructions.jsonl"


def shipped(name: str) -> Path:
    """The path of the data file `name` installed with the package."""
    return Path(str(resources.files(__name__).joinpath(name)))
