"""Training checkpoints: written atomically under OUT/checkpoints/step-NNNNNNN, newest kept, found again by `--resume`.

A checkpoint holds what accelerate's `save_state` writes (trainable weights, optimizer, scheduler, every process's RNG
state) plus `trainer_state.json` (the step, which fixes the data position because batches are a function of the
step, and the settings that must not change across a resume). It is written to a `.partial` folder and renamed when
complete, so a kill mid-save leaves the previous checkpoint as the newest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.jsonfile import read_log_lines, write_text_atomic

STATE_FILE = "trainer_state.json"
_PREFIX = "step-"


def checkpoint_root(out: Path) -> Path:
    return out / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (a renamed folder with its state file), or None."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and p.suffix != ".partial"
            and (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name[len(_PREFIX):]), default=None)


def save_checkpoint(accelerator: Any, out: Path, step: int, state: dict[str, Any]) -> Path:
    """Every process calls this; the main one renames the finished folder and removes older checkpoints."""
    final = checkpoint_root(out) / f"{_PREFIX}{step:07d}"
    staging = final.with_suffix(".partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for old in checkpoint_root(out).iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path, expected: dict[str, Any]) -> int:
    """Restore weights, optimizer, scheduler and RNG from `path`; returns the step to continue from.

    `expected` holds the settings that decide the batches and the schedule: a resume with different ones would not
    continue the same run, so it is refused."""
    state = json.loads((path / STATE_FILE).read_text())
    for key, value in expected.items():
        if state.get(key) != value:
            raise UserError(
                f"cannot resume from {path}: {key} was {state.get(key)!r}, now {value!r} "
                "(use the original settings, or a new --out to start over)"
            )
    accelerator.load_state(str(path), strict=False)  # frozen weights are not saved: they come from the base model
    return int(state["step"])


def trim_metrics(metrics: Path, step: int) -> None:
    """Drop metric lines past the checkpoint a resumed run continues from (they will be logged again)."""
    if not metrics.exists():
        return
    records, _, _ = read_log_lines(metrics)  # a line torn by the kill is past every checkpoint: dropped with them
    kept = [record for _, record in records if record["step"] <= step]
    write_text_atomic(metrics, "".join(json.dumps(record) + "\n" for record in kept))


def keep_trainable_weights(models: list[Any], weights: list[dict[str, Any]], _output_dir: str) -> None:
    """accelerate save-state hook: store only weights that training changes (a LoRA checkpoint stays megabytes)."""
    for model, state in zip(models, weights):
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        for name in list(state):
            if name not in trainable:
                del state[name]
