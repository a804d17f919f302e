"""`apprentice train`: supervised fine-tuning with the prompt masked, full or LoRA, resumable, on one or many processes
(run it under `torchrun --nproc_per_node N` or `accelerate launch` to use several GPUs). The options are
`TrainConfig`'s settings."""

from __future__ import annotations

import typer

from apprentice.settings import command
from apprentice.train.loop import TrainConfig


def _train(config: TrainConfig) -> None:
    from apprentice.train.loop import train

    train(config)


def register(app: typer.Typer) -> None:
    app.command("train")(command(
        TrainConfig, _train, doc="Fine-tune a model on instruction data; the loss covers the response tokens only."))
