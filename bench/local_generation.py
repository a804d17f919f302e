"""Local backend throughput: generated tokens/s at batch size 1 vs batch size 16 on the bundled teacher.

    python bench/local_generation.py [--model bundled:smollm2-135m-instruct] [--prompts 16] [--max-tokens 64]

Both runs answer the same chat prompts greedily with the same model in the same process (batch 1 first as the
baseline), so the ratio is what batching buys on this machine.
"""

from __future__ import annotations

import argparse
import time

from apprentice.models import Request
from apprentice.models.local import LocalModel
from apprentice.models.base import BackendOptions
from apprentice.models.spec import local_model_dir, parse_spec

TOPICS = ["staying healthy", "saving money", "learning a language", "writing clearly", "sleeping better",
          "cooking rice", "planning a trip", "reading more", "public speaking", "growing tomatoes",
          "studying for exams", "running a meeting", "keeping plants alive", "reducing stress", "making friends",
          "organising a desk"]


def measure(model: LocalModel, requests: list[Request], batch_size: int) -> tuple[float, int]:
    model.options.batch_size = batch_size
    started = time.perf_counter()
    completions = model.generate(requests)
    return time.perf_counter() - started, sum(c.completion_tokens for c in completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    spec = parse_spec(args.model)
    model = LocalModel.from_dir(local_model_dir(spec), str(spec), BackendOptions(device="cpu"))
    requests = [Request(messages=[{"role": "user", "content": f"Give three tips for {TOPICS[i % len(TOPICS)]}."}],
                        max_tokens=args.max_tokens) for i in range(args.prompts)]
    measure(model, requests[:2], 2)  # warm-up
    results = {}
    for batch_size in (1, 16):
        seconds, tokens = measure(model, requests, batch_size)
        results[batch_size] = tokens / seconds
        print(f"batch {batch_size:>2}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s")
    print(f"speed-up batch 16 / batch 1: {results[16] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
