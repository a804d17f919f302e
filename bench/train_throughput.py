"""Benchmark: training throughput of apprentice's loop against the Stanford Alpaca recipe, on the same examples.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/train_throughput.py --device cuda --steps 20 --examples 16296        # Gemma-3-270M shapes
    python bench/train_throughput.py --device cpu --layers 2 --vocab 16384 --examples 512 --steps 3 \\
        --global-batch 32 --per-device-batch 8 --token-budget 4096                   # a reduced run on a CPU

Both sides train a randomly initialised Gemma 3 text model with Gemma-3-270M's shapes (hidden 640, 18 layers, 4
heads, 1 KV head, head_dim 256, MLP 2048, vocabulary 262,144; `--layers`, `--vocab` and `--hidden` shrink it for a
CPU). Throughput does not depend on the weights, and random weights need no download.

The examples are synthetic Alpaca-like token sequences, the same for both sides (`--seed`): a prompt of 40 template
tokens + an instruction (log-normal, median 20 tokens) + an input for 40% of examples (log-normal, median 30), and a
response (log-normal, median 60 tokens, sigma 0.9, so a long tail) + EOS, cut at `--max-len` 512. Token ids follow a
Zipf law, so there is something to learn. Labels are -100 on the prompt.

* recipe (the baseline): HF `Trainer`, Stanford's settings: random order, right padding to the longest example of
  each per-device batch, global batch `--global-batch` 128 examples made of `--per-device-batch` x accumulation,
  AdamW lr 2e-5, cosine with 3% warmup, bf16 autocast on CUDA, full vocabulary logits and loss.
* apprentice: `apprentice.train.loop.Run`, the loop `apprentice train` runs: length-sorted batches filled to
  `--token-budget` padded tokens, shuffled batch order, LM head + loss on response positions only, in chunks.

The recipe runs `--steps` optimizer steps; apprentice runs as many of its steps as it takes to see at least as many
examples. Each side runs in its own subprocess so that peak memory is its own. Reported per side: real (non-padding)
tokens per second over all steps but the first (warm-up), the share of computed positions that are padding, peak
memory (CUDA: max allocated; CPU: max resident set) and the loss (last step, and mean of the last quarter of steps).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

IGNORE = -100


def synthetic_examples(count: int, vocab: int, max_len: int, seed: int) -> list[tuple[list[int], list[int]]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        prompt_len = 40 + int(rng.lognormal(math.log(20), 0.5))
        if rng.random() < 0.4:
            prompt_len += int(rng.lognormal(math.log(30), 1.0))
        response_len = max(1, int(rng.lognormal(math.log(60), 0.9))) + 1
        ids = ((rng.zipf(1.3, prompt_len + response_len) + 3) % vocab).tolist()[:max_len]
        prompt_len = min(prompt_len, max_len - 1)  # keep at least one response token, as `tokenize` does
        labels = [IGNORE] * prompt_len + ids[prompt_len:]
        examples.append((ids, labels))
    return examples


def build_model(args: argparse.Namespace):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(args.seed)
    config = Gemma3TextConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
        max_position_embeddings=32768, sliding_window=512, query_pre_attn_scalar=256, pad_token_id=0,
        tie_word_embeddings=True,
    )
    return Gemma3ForCausalLM(config)


def peak_memory_gib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def summarise(device: str, steps: list[dict], examples: int) -> dict:
    timed = steps[1:] or steps
    seconds = sum(s["seconds"] for s in timed)
    tail = steps[-max(1, len(steps) // 4):]
    return {
        "steps": len(steps), "examples": examples,
        "real_tokens_per_s": sum(s["tokens"] for s in timed) / seconds,
        "padding_share": 1 - sum(s["tokens"] for s in steps) / sum(s["padded_tokens"] for s in steps),
        "peak_memory_gib": peak_memory_gib(device), "final_loss": steps[-1]["loss"],
        "tail_loss": sum(s["loss"] for s in tail) / len(tail), "seconds_per_step": seconds / len(timed),
    }


def run_recipe(args: argparse.Namespace, data: list) -> dict:
    """Stanford's train.py setup, on our synthetic examples."""
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    counts = {"tokens": 0, "padded": 0}

    def collate(items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(item["input_ids"]), torch.tensor(
                item["labels"]), 1
        counts["tokens"] += int(mask.sum())
        counts["padded"] += mask.numel()
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    steps: list[dict] = []

    class Timer(TrainerCallback):
        """Times each optimizer step from the end of the previous one, so fetching and collating its micro-batches
        (which the Trainer does before `on_step_begin`) is counted, as it is in apprentice's step."""

        def mark(self) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.last, self.tokens, self.padded = time.perf_counter(), counts["tokens"], counts["padded"]

        def on_train_begin(self, *_, **__):
            self.mark()

        def on_step_end(self, *_, **__):
            last, tokens, padded = self.last, self.tokens, self.padded
            self.mark()
            steps.append({"seconds": self.last - last, "tokens": self.tokens - tokens,
                          "padded_tokens": self.padded - padded})

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs and steps:
                steps[-1]["loss"] = logs["loss"]

    dataset = [{"input_ids": ids, "labels": labels} for ids, labels in data]
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.per_device_batch,
            gradient_accumulation_steps=args.global_batch // args.per_device_batch, learning_rate=2e-5,
            weight_decay=0.0, warmup_steps=0.03, lr_scheduler_type="cosine", max_steps=args.steps,
            bf16=args.device == "cuda", logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
            use_cpu=args.device == "cpu", remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0,
        )
        model = build_model(args)
        Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collate,
                callbacks=[Timer()]).train()
    return summarise(args.device, steps, args.steps * args.global_batch)


def run_apprentice(args: argparse.Namespace, data: list) -> dict:
    from apprentice.train.batching import BatchPlan
    from apprentice.train.loop import Run, TrainConfig, make_accelerator

    config = TrainConfig(base="random-init", data="synthetic", out="-", lr=2e-5, max_len=args.max_len,
                         token_budget=args.token_budget, seed=args.seed, cpu=args.device == "cpu")
    plan = BatchPlan.build([len(ids) for ids, _ in data], args.token_budget, args.seed)
    target, seen, total_steps = args.steps * args.global_batch, 0, 0
    while seen < target:  # as many steps as it takes to see the recipe's number of examples
        seen += len(plan.batch(total_steps))
        total_steps += 1
    accelerator = make_accelerator(config)
    run = Run(accelerator, build_model(args), data, config, pad_id=0, total_steps=total_steps)
    steps = [run.step(step) for step in range(total_steps)]
    return summarise(args.device, steps, seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=20, help="recipe optimizer steps (global batches)")
    parser.add_argument("--examples", type=int, default=16296, help="synthetic examples in the data set")
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--vocab", type=int, default=262144)
    parser.add_argument("--hidden", type=int, default=640)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--global-batch", type=int, default=128, help="recipe: examples per optimizer step")
    parser.add_argument("--per-device-batch", type=int, default=16, help="recipe: examples per forward pass")
    parser.add_argument("--token-budget", type=int, default=16384, help="apprentice: padded tokens per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["recipe", "apprentice"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:
        data = synthetic_examples(args.examples, args.vocab, args.max_len, args.seed)
        result = (run_recipe if args.only == "recipe" else run_apprentice)(args, data)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for side in ("recipe", "apprentice"):
        done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", side], capture_output=True,
                              text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
        results[side] = json.loads(lines[-1].removeprefix("RESULT "))
    print("| | recipe (HF Trainer) | apprentice |\n|---|---|---|")
    rows = [("optimizer steps", "steps", "{:d}"), ("examples seen", "examples", "{:,}"),
            ("real tokens/s", "real_tokens_per_s", "{:,.0f}"), ("padding share", "padding_share", "{:.1%}"),
            ("peak memory (GiB)", "peak_memory_gib", "{:.2f}"), ("seconds per step", "seconds_per_step", "{:.2f}"),
            ("final loss", "final_loss", "{:.4f}"), ("mean loss, last quarter", "tail_loss", "{:.4f}")]
    for label, key, fmt in rows:
        print(f"| {label} | {fmt.format(results['recipe'][key])} | {fmt.format(results['apprentice'][key])} |")
    speedup = results["apprentice"]["real_tokens_per_s"] / results["recipe"]["real_tokens_per_s"]
    print(f"\napprentice / recipe real tokens/s: {speedup:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
