"""`apprentice train`: supervised fine-tuning with the prompt masked, full or LoRA, resumable, on one or many processes
(run it under `torchrun --nproc_per_node N` or `accelerate launch` to use several GPUs)."""

from __future__ import annotations

import typer

from apprentice.models.spec import SPEC_HELP
from apprentice.train.loop import FULL_LR, LORA_LR, TrainConfig
from apprentice.train.loop import train as run_training

D = TrainConfig  # the dataclass's class attributes are its defaults: one source for the CLI and the API

def train(
    base: str = typer.Option(..., "--base", help=f"The model to start from ({SPEC_HELP}; not openai:)."),
    data: str = typer.Option(
        ..., "--data", help="Training data: Alpaca JSON list or JSONL (instruction, input, output)."),
    out: str = typer.Option(..., "--out", help="Output directory: model, tokenizer, apprentice.json, metrics.jsonl."),
    template: str = typer.Option(
        D.template, help="Prompt template: 'alpaca', 'chat' (the tokenizer's chat template) or a TOML/JSON file "
        "with prompt_input and prompt_no_input."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters instead of every weight."),
    lora_rank: int = typer.Option(D.lora_rank, help="LoRA rank."),
    lora_alpha: int = typer.Option(D.lora_alpha, help="LoRA alpha (the update is scaled by alpha / rank)."),
    lora_dropout: float = typer.Option(D.lora_dropout, help="Dropout on the LoRA input."),
    lora_targets: str = typer.Option(
        D.lora_targets, help="Comma-separated module names to adapt; all-linear = every attention and MLP projection."),
    merge: bool = typer.Option(False, "--merge", help="With --lora: write the merged model (adapter in OUT/adapter)."),
    lr: float = typer.Option(None, help=f"Peak learning rate (default: {FULL_LR:g} full, {LORA_LR:g} LoRA)."),
    epochs: int = typer.Option(D.epochs, help="Passes over the data."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps (overrides --epochs)."),
    max_len: int = typer.Option(D.max_len, help="Most tokens per example, prompt included; longer ones are cut."),
    token_budget: int = typer.Option(
        D.token_budget, help="Padded tokens per optimizer step over all processes (examples x longest example)."),
    micro_budget: int = typer.Option(
        None, help="Padded tokens per forward pass per process; smaller saves memory (gradient accumulation)."),
    warmup_ratio: float = typer.Option(
        D.warmup_ratio, help="Share of steps with linear warmup before the cosine decay."),
    weight_decay: float = typer.Option(D.weight_decay, help="AdamW weight decay."),
    grad_clip: float = typer.Option(D.grad_clip, help="Clip the gradient norm to this before each step."),
    seed: int = typer.Option(D.seed, help="Seed for the batch order and LoRA initialisation."),
    save_every: int = typer.Option(
        D.save_every, help="Steps between checkpoints (one is written at the end too); 0 = end only."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its newest checkpoint."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing",
        help="Recompute activations in the backward pass: less memory, about 30% slower."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the decoder (lengths bucketed to 64)."),
    precision: str = typer.Option(D.precision, help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
) -> None:
    """Fine-tune a model on instruction data; the loss covers the response tokens only."""
    run_training(TrainConfig(
        base=base, data=data, out=out, template=template, lora=lora, lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, lora_targets=lora_targets, merge=merge, lr=lr, epochs=epochs, max_steps=max_steps,
        max_len=max_len, token_budget=token_budget, micro_budget=micro_budget, warmup_ratio=warmup_ratio,
        weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, save_every=save_every, resume=resume,
        gradient_checkpointing=gradient_checkpointing, compile=compile, precision=precision, cpu=cpu,
    ))


def register(app: typer.Typer) -> None:
    app.command()(train)
