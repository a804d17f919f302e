"""Write the trained model directory: weights (or a LoRA adapter, or the merged model), tokenizer, `apprentice.json`.

Files are written into a staging folder and moved into OUT, `apprentice.json` last: its presence marks a finished
model, and `apprentice answer` reads the template from it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from apprentice.train.templates import MANIFEST


def _publish(staging: Path, out: Path) -> None:
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


def export_model(
    model: Any, state_dict: dict[str, Any], tokenizer: Any, out: Path, manifest: dict[str, Any], merge: bool
) -> None:
    """Save `model` (a transformers model or a PEFT model) with the weights in `state_dict`.

    The state dict is passed in because under FSDP only a gathered copy holds the full weights."""
    staging = out / ".export.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    is_peft = callable(getattr(model, "merge_and_unload", None))
    if is_peft and merge:
        model.load_state_dict(state_dict)
        model.save_pretrained(staging / "adapter")  # kept beside the merged weights: small, and reusable on the base
        model.merge_and_unload().save_pretrained(staging)
    else:
        model.save_pretrained(staging, state_dict=state_dict)
    tokenizer.save_pretrained(staging)
    _publish(staging, out)
    partial = out / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(partial, out / MANIFEST)
