"""The training loop: supervised fine-tuning of a causal LM on Alpaca data, full or LoRA, on one or many processes.

    from apprentice.train.loop import TrainConfig, train
    train(TrainConfig(base="bundled:gemma-3-270m", data="runs/x/alpaca_data.json", out="runs/x/student", lora=True))

or `apprentice train ...`, or the same command under `torchrun --nproc_per_node N` / `accelerate launch`.

One optimizer step = one global batch from `BatchPlan` (length-sorted, filled to `token_budget` padded tokens). Under
N processes each takes every N-th example of that batch, computes the summed loss of its share, and scales it so
that the averaged gradient equals the gradient of the mean over all response tokens of the global batch: the loss
curve does not depend on the number of processes. Defaults follow Stanford Alpaca (lr 2e-5, 3 epochs, cosine with
3% warmup, max length 512, no weight decay, clipping 1.0); LoRA defaults to lr 3e-4.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from apprentice.errors import UserError
from apprentice.models.spec import SPEC_HELP, local_model_dir, parse_spec
from apprentice.runlock import LOCK_FILE, hold
from apprentice.settings import check_settings, setting
from apprentice.train.batching import BatchPlan, pack, padded, share
from apprentice.train.checkpoint import (
    keep_trainable_weights,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trim_metrics,
)
from apprentice.train.data import IGNORE, TokenCounts, file_sha256, load_examples, tokenize
from apprentice.train.export import export_model
from apprentice.train.templates import load_template_file, resolve_template

FULL_LR = 2e-5  # Stanford Alpaca
LORA_LR = 3e-4  # alpaca-lora
DEFAULT_TOKEN_BUDGET = 16384  # padded tokens per optimizer step; about Stanford's 128 examples on Alpaca-like data


@dataclass
class TrainConfig:
    base: str = setting(help=f"The model to start from ({SPEC_HELP}; not openai:).")
    # the run directory's files when the pipeline trains: no run-config keys
    data: str | None = setting(None, "Training data: Alpaca JSON list or JSONL (instruction, input, output).", required=True,
                        toml=False)
    out: str | None = setting(None, "Output directory: model, tokenizer, apprentice.json, metrics.jsonl, checkpoints/.",
                       required=True, toml=False)
    template: str = setting(
        "alpaca", "Prompt template: 'alpaca', 'chat' (the tokenizer's chat template) or a TOML/JSON file with "
        "prompt_input and prompt_no_input.")
    lora: bool = setting(False, "Train LoRA adapters instead of every weight.")
    lora_rank: int = setting(16, "LoRA rank.", min=1)
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / rank).")
    lora_dropout: float = setting(0.05, "Dropout on the LoRA input.")
    lora_targets: str = setting(
        "all-linear", "Comma-separated module names to adapt; all-linear = every attention and MLP projection.")
    merge: bool = setting(False, "With --lora: write the merged model (adapter in OUT/adapter).")
    lr: float | None = setting(None, f"Peak learning rate (default: {FULL_LR:g} full, {LORA_LR:g} LoRA).")
    epochs: int = setting(3, "Passes over the data.")
    max_steps: int | None = setting(None, "Stop after this many optimizer steps (overrides --epochs).", min=1)
    max_len: int = setting(512, "Most tokens per example, prompt included; longer ones are cut.", unit="tokens",
                           min=2)
    token_budget: int = setting(
        DEFAULT_TOKEN_BUDGET, "Padded tokens per optimizer step over all processes (examples x longest example).",
        unit="tokens")
    micro_budget: int | None = setting(
        None, "Padded tokens per forward pass per process; smaller saves memory (gradient accumulation).",
        unit="tokens")
    warmup_ratio: float = setting(0.03, "Share of steps with linear warmup before the cosine decay.", min=0, max=1)
    weight_decay: float = setting(0.0, "AdamW weight decay.", min=0)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this before each step.", min=0)
    seed: int = setting(42, "Seed for the batch order and LoRA initialisation.")
    save_every: int = setting(
        200, "Steps between checkpoints (one is written at the end too); 0 = end only.", output=False, min=0)
    # how the pipeline continues its own run, so not a run-config key
    resume: bool = setting(False, "Continue the run in OUT from its newest checkpoint.", toml=False)
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: less memory, about 30% slower.", output=False)
    # sequence lengths are padded to multiples of 64 under compile, to bound the shapes it compiles for
    compile: bool = setting(False, "torch.compile the decoder (lengths bucketed to 64).", output=False)
    precision: str = setting("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32.")
    cpu: bool = setting(False, "Train on the CPU even when a GPU is present.")
    # the run config's way to train on many processes; on the command line, run `apprentice train` under the
    # launcher itself
    launch: str | None = setting(
        None, "Run training as a separate multi-process job: a launcher prefix such as 'torchrun --nproc_per_node 8' "
        "or 'accelerate launch --config_file examples/accelerate_fsdp.yaml'; none trains in this process.",
        cli=False, output=False)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (LORA_LR if self.lora else FULL_LR)

    @property
    def pad_multiple(self) -> int:
        return 64 if self.compile else 1


def check_config(config: TrainConfig) -> None:
    """Reject settings that cannot work, before anything is loaded."""
    if config.data is None or config.out is None:
        raise UserError("training needs its data (--data) and an output directory (--out)")
    check_settings(config)
    if config.token_budget < padded(config.max_len, config.pad_multiple):
        raise UserError(f"--token-budget {config.token_budget} must hold one example of --max-len {config.max_len}")
    if config.micro_budget is not None and config.micro_budget < padded(config.max_len, config.pad_multiple):
        raise UserError(f"--micro-budget {config.micro_budget} must hold one example of --max-len {config.max_len}")
    if config.epochs < 1 and config.max_steps is None:
        raise UserError("--epochs must be at least 1")
    if config.merge and not config.lora:
        raise UserError("--merge only applies to --lora training")
    if config.precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"--precision must be auto, bf16 or fp32, not {config.precision!r}")
    out = Path(config.out)
    if not config.resume and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UserError(f"{out} is not empty: pass --resume to continue its run, or choose a new --out")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup from 0, then cosine decay to 0 at `total`
    (the schedule of HF's Trainer with lr_scheduler_type="cosine", which Stanford used)."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _load_model(path: str, config: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress bar (ours) is enough, and N processes would each draw theirs
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load base model {config.base}: {str(exc).splitlines()[0]}") from exc
    # a model converted from GGUF still carries the quantizer marker, which makes save_pretrained refuse
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora:
        from peft import LoraConfig, get_peft_model

        targets = config.lora_targets if config.lora_targets == "all-linear" else config.lora_targets.split(",")
        try:
            model = get_peft_model(model, LoraConfig(
                r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules=targets, task_type="CAUSAL_LM",
            ))
        except ValueError as exc:  # PEFT names the targets it could not find
            raise UserError(f"--lora-targets {config.lora_targets}: {str(exc).splitlines()[0]}") from exc
    return model


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int, multiple: int, device: Any):
    """Right-padded tensors; padding is masked out of attention and labels."""
    import torch

    width = padded(max(len(ids) for ids, _ in sequences), multiple)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device), labels.to(device)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} tok/s"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, disable=not enabled,
    )


def describe_counts(counts: TokenCounts, plan: BatchPlan, total_steps: int) -> str:
    return (
        f"{counts.kept:,} examples ({counts.dropped:,} dropped: prompt fills --max-len;"
        f" {counts.truncated:,} cut short),"
        f" {counts.prompt_tokens:,} prompt + {counts.response_tokens:,} response tokens;"
        f" {plan.steps_per_epoch:,} batches per epoch, {total_steps:,} steps"
    )


def make_accelerator(config: TrainConfig):
    """The process group and device: one process, or one per GPU/CPU worker under torchrun / accelerate launch."""
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not config.cpu
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda)
    # accelerate only sets up multi-process CPU training (gloo) when told it runs on the CPU
    return Accelerator(cpu=not cuda, mixed_precision="bf16" if use_bf16 else "no")


class Run:
    """The model, optimizer and schedule of one training run over tokenised sequences; `step(n)` trains step n.

    Every process builds the same plan; step n's global batch is `plan.batch(n)` and this process takes its share."""

    def __init__(self, accelerator: Any, model: Any, sequences: list[tuple[list[int], list[int]]],
                 config: TrainConfig, pad_id: int, total_steps: int | None = None):
        import torch

        from apprentice.train.loss import ResponseLoss, causal_lm_of

        self.accelerator, self.config, self.sequences, self.pad_id = accelerator, config, sequences, pad_id
        self.lengths = [len(ids) for ids, _ in sequences]
        # response tokens each example contributes to the loss (position 0 has no prediction before it)
        self.targets = [sum(1 for label in labels[1:] if label != IGNORE) for _, labels in sequences]
        self.plan = BatchPlan.build(self.lengths, config.token_budget, config.seed, config.pad_multiple)
        self.total_steps = total_steps or config.max_steps or config.epochs * self.plan.steps_per_epoch
        loss_module = ResponseLoss(model)
        if config.compile:
            causal_lm_of(model).get_decoder().compile(dynamic=False)
        optimizer = torch.optim.AdamW(
            [p for p in loss_module.parameters() if p.requires_grad], lr=config.peak_lr,
            weight_decay=config.weight_decay, fused=accelerator.device.type == "cuda",
        )
        self.loss_module, self.optimizer = accelerator.prepare(loss_module, optimizer)
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(lr_factor, warmup=warmup, total=self.total_steps))
        accelerator.register_for_checkpointing(self.scheduler)
        accelerator.register_save_state_pre_hook(keep_trainable_weights)

    def step(self, step: int) -> dict[str, Any]:
        """One optimizer step on global batch `step`; returns its metrics (the same on every process)."""
        import torch

        acc, config = self.accelerator, self.config
        began = time.perf_counter()
        batch = self.plan.batch(step)
        global_targets = sum(self.targets[i] for i in batch)
        mine = share(batch, acc.process_index, acc.num_processes)
        # gradients are averaged over processes, so each scales its summed loss by N / (response tokens in batch)
        weight = acc.num_processes / global_targets
        if not mine:  # fewer examples than processes: join the collectives with a zero-weight example
            mine, weight = [batch[0]], 0.0
        micro_batches = pack(mine, self.lengths, config.micro_budget or config.token_budget, config.pad_multiple)
        loss_sum = torch.zeros((), device=acc.device)
        for k, micro in enumerate(micro_batches):
            tensors = collate([self.sequences[i] for i in micro], self.pad_id, config.pad_multiple, acc.device)
            last = k == len(micro_batches) - 1
            with nullcontext() if last else acc.no_sync(self.loss_module):  # sync gradients once per step
                total, _count = self.loss_module(*tensors)
                acc.backward(total * weight)
            loss_sum += total.detach() * (weight > 0)
        grad_norm = acc.clip_grad_norm_(self.loss_module.parameters(), config.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = acc.reduce(loss_sum, reduction="sum").item() / global_targets
        seconds = time.perf_counter() - began
        tokens = sum(self.lengths[i] for i in batch)
        return {
            "step": step + 1, "epoch": round((step + 1) / self.plan.steps_per_epoch, 4), "loss": loss, "lr": lr,
            "grad_norm": float(grad_norm), "tokens": tokens, "response_tokens": global_targets, "examples": len(batch),
            "padded_tokens": len(batch) * padded(max(self.lengths[i] for i in batch), config.pad_multiple),
            "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 4),
        }


def train(config: TrainConfig, console: Console | None = None, stop_after: int | None = None) -> dict[str, Any] | None:
    """Run (or resume) a training run; returns the manifest written to OUT/apprentice.json.

    `stop_after` ends the run after that step without exporting the model, as a job killed by a time limit would
    (checkpoints written so far stay for `resume`); it returns None then."""
    check_config(config)
    spec = parse_spec(config.base)
    if not spec.is_local:
        raise UserError(f"cannot train {spec}: it is served over HTTP; give hf:, gguf: or bundled: weights")
    examples = load_examples(config.data)
    # a template file is checked now: finding the base's tokenizer may first convert a GGUF model (a minute)
    custom = None if config.template in ("alpaca", "chat") else load_template_file(config.template)
    from apprentice.models.local import load_tokenizer

    model_dir = local_model_dir(spec)
    tokenizer = load_tokenizer(model_dir, str(spec))
    template = custom or resolve_template(config.template, tokenizer)
    data = tokenize(examples, template, tokenizer, config.max_len)
    if not data.sequences:
        raise UserError(f"{config.data}: every example's prompt fills --max-len {config.max_len}; nothing to train on")

    from accelerate.utils import set_seed

    accelerator = make_accelerator(config)
    if config.merge and accelerator.distributed_type == "FSDP":
        raise UserError("--merge is not available under FSDP: train the adapter, then merge it in one process")
    console = console or Console(stderr=True)
    main = accelerator.is_main_process
    out = Path(config.out)
    set_seed(config.seed)
    # padded positions are masked out of attention and loss, so any id works when the tokenizer has no pad token
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    run = Run(accelerator, _load_model(model_dir, config), data.sequences, config, pad_id)
    if main:
        console.print(describe_counts(data.counts, run.plan, run.total_steps), highlight=False)

    run_identity = {
        "data_sha256": file_sha256(config.data), "base": str(spec), "template": template.to_json(), "lora": config.lora,
        "max_len": config.max_len, "token_budget": config.token_budget, "seed": config.seed,
        "total_steps": run.total_steps, "peak_lr": config.peak_lr, "pad_multiple": config.pad_multiple,
    }
    held = ExitStack()
    if main:  # one writer per OUT: the main process holds its lock (the other processes of this job write nothing)
        held.enter_context(hold(out, "apprentice train"))
    with held:
        start = 0
        if config.resume:
            checkpoint = latest_checkpoint(out)
            if checkpoint is None:
                raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'}")
            start = load_checkpoint(accelerator, checkpoint, run_identity)
            if main:
                trim_metrics(out / "metrics.jsonl", start)
                console.print(f"resumed from {checkpoint} at step {start}", highlight=False)
        return _train_and_export(config, accelerator, run, out, template, tokenizer, data, spec, model_dir,
                                 run_identity, start, stop_after, console)


def _train_and_export(config: TrainConfig, accelerator, run: Run, out: Path, template, tokenizer, data, spec,
                      model_dir: str, run_identity: dict[str, Any], start: int, stop_after: int | None,
                      console: Console) -> dict[str, Any] | None:
    main = accelerator.is_main_process
    metrics_path = out / "metrics.jsonl"
    loss = None
    with _progress(console, main) as progress, (metrics_path.open("a") if main else nullcontext()) as log:
        task = progress.add_task("train", total=run.total_steps, completed=start, loss="-", speed="-")
        for step in range(start, run.total_steps):
            record = run.step(step)
            loss, done = record["loss"], record["step"]
            if main:
                log.write(json.dumps(record) + "\n")
                log.flush()
            progress.update(task, advance=1, loss=f"{loss:.4f}", speed=f"{record['tokens_per_s']:,.0f}")
            if done == run.total_steps or (config.save_every and done % config.save_every == 0):
                save_checkpoint(accelerator, out, done, run_identity)
            if stop_after is not None and done >= stop_after:
                accelerator.end_training()
                return None

    manifest = {
        "template": template.to_json(), "base": str(spec), "base_dir": model_dir,
        "data": str(config.data), "data_sha256": run_identity["data_sha256"],
        "method": "lora" if config.lora else "full", "merged": config.merge,
        "hyperparameters": {**asdict(config), "peak_lr": config.peak_lr}, "token_counts": data.counts.to_json(),
        "steps": run.total_steps, "world_size": accelerator.num_processes, "final_loss": loss,
    }
    state_dict = accelerator.get_state_dict(run.loss_module)  # every process joins: FSDP gathers the shards here
    if main:
        unwrapped = accelerator.unwrap_model(run.loss_module)
        weights = {k.removeprefix("model."): v for k, v in state_dict.items()}
        export_model(unwrapped.model, weights, tokenizer, out, manifest, config.merge)
        console.print(f"saved {'LoRA adapter' if config.lora and not config.merge else 'model'} to {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return manifest
