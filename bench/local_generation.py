"""Local generation throughput: the engines side by side, transformers (today's backend) as the baseline.

    python bench/local_generation.py [--model bundled:smollm2-135m-instruct] [--prompts 48] [--max-tokens 64]
                                     [--batch-sizes 1,8,12] [--engines transformers,ctranslate2,ctranslate2-int8]

Two workloads, each engine loaded once in this process (conversions happen before anything is timed):

- answers: chat prompts "Give three tips for ...", greedy, --max-tokens new tokens, at each batch size (8 is what
  the demo's generate stage batches, 12 its answers and judge; 1 is one request at a time). 48 prompts fill whole
  batches at both sizes, as the demo's generate stage does (it asks up to 64 requests at once). Within a batch size
  the engines run one after another, so load from other processes falls on all of them alike.
- judge: the judge's requests (the instruction, two of the answers above, first-token log-probabilities, 16
  tokens) at the largest batch size.

Every engine's answers are compared with transformers': "same" counts identical texts, "leading words" is the mean
number of words an answer shares with transformers' before they first differ (of the mean words of transformers'
answers), and for the judge how many verdicts agree (read as the judge stage reads them) and the largest
difference of the top log-probabilities both return.
"""

from __future__ import annotations

import argparse
import os
import time

from apprentice.evaluate.judge import judge_request
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.verdict import parse_verdict, verdict_from_logprobs
from apprentice.models import Request, load_model
from apprentice.models.base import BackendOptions, Completion, Model

TOPICS = ["staying healthy", "saving money", "learning a language", "writing clearly", "sleeping better",
          "cooking rice", "planning a trip", "reading more", "public speaking", "growing tomatoes",
          "studying for exams", "running a meeting", "keeping plants alive", "reducing stress", "making friends",
          "organising a desk"]


def measure(model: Model, requests: list[Request], batch_size: int) -> tuple[float, list[Completion]]:
    """Seconds and answers for `requests` in one stream of batches; batch size 1 is one request at a time (a
    user at `apprentice chat`, one client of `serve`), not a stream split into batches of one."""
    model.options.batch_size = batch_size
    started = time.perf_counter()
    if batch_size == 1:
        completions = [model.generate([r])[0] for r in requests]
    else:
        completions = model.generate(requests)
    return time.perf_counter() - started, completions


def leading_words(a: str, b: str) -> int:
    """How many words two answers share before they first differ."""
    return len(os.path.commonprefix([a.split(), b.split()]))


def verdict(completion: Completion):
    """The verdict the judge stage reads from a reply: its text, else its first-token log-probabilities."""
    return parse_verdict(completion.text) or verdict_from_logprobs(completion.top_logprobs)


def logprob_difference(a: list[Completion], b: list[Completion]) -> float:
    """The largest difference between log-probabilities of tokens both completions list."""
    worst = 0.0
    for x, y in zip(a, b):
        shared = set(x.top_logprobs or {}) & set(y.top_logprobs or {})
        worst = max([worst] + [abs(x.top_logprobs[t] - y.top_logprobs[t]) for t in shared])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,12")
    parser.add_argument("--engines", default="transformers,ctranslate2,ctranslate2-int8")
    args = parser.parse_args()
    engines = args.engines.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = {e: load_model(args.model, BackendOptions(device="cpu", engine=e)) for e in engines}
    baseline = engines[0]
    requests = [Request(messages=[{"role": "user", "content": f"Give three tips for {TOPICS[i % len(TOPICS)]}."}],
                        max_tokens=args.max_tokens) for i in range(args.prompts)]
    for model in models.values():
        measure(model, requests[:2], 2)  # warm-up
    print(f"{args.model}, {args.prompts} chat prompts, greedy, max {args.max_tokens} new tokens; baseline {baseline}",
          flush=True)
    print("| workload | batch | engine | tokens | seconds | tokens/s | vs baseline | same text as baseline "
          "| leading words |")
    print("|---|---|---|---|---|---|---|---|---|")
    answers: dict[str, list[Completion]] = {}
    for batch_size in batch_sizes:
        rate = {}
        for engine, model in models.items():
            seconds, completions = measure(model, requests, batch_size)
            answers.setdefault(engine, completions)
            tokens = sum(c.completion_tokens for c in completions)
            rate[engine] = tokens / seconds
            same = sum(a.text == b.text for a, b in zip(completions, answers[baseline]))
            shared = sum(leading_words(a.text, b.text) for a, b in zip(completions, answers[baseline]))
            words = sum(len(b.text.split()) for b in answers[baseline])
            print(f"| answers | {batch_size} | {engine} | {tokens} | {seconds:.1f} | {rate[engine]:.1f} | "
                  f"{rate[engine] / rate[baseline]:.2f}x | {same}/{len(requests)} | "
                  f"{shared / len(requests):.1f} of {words / len(requests):.1f} |", flush=True)
    texts = [c.text for c in answers[baseline]]
    pairs = [Pair(requests[i].messages[0]["content"], texts[i], texts[(i + 1) % len(texts)], "a", "b")
             for i in range(len(texts))]
    judged = [judge_request(pair, swapped=False) for pair in pairs]
    verdicts: dict[str, list[Completion]] = {}
    wall: dict[str, float] = {}
    batch_size = max(batch_sizes)
    for engine, model in models.items():
        wall[engine], verdicts[engine] = measure(model, judged, batch_size)
        tokens = sum(c.completion_tokens for c in verdicts[engine])
        read = sum(c.prompt_tokens for c in verdicts[engine])
        same = sum(a.text == b.text for a, b in zip(verdicts[engine], verdicts[baseline]))
        agree = sum(verdict(a) == verdict(b) for a, b in zip(verdicts[engine], verdicts[baseline]))
        moved = logprob_difference(verdicts[engine], verdicts[baseline])
        # the judge reads far more than it writes: its speed-up is one of wall time
        print(f"| judge | {batch_size} | {engine} | {tokens} ({read} read) | {wall[engine]:.1f} | "
              f"{tokens / wall[engine]:.1f} | {wall[baseline] / wall[engine]:.2f}x | {same}/{len(judged)} | "
              f"same verdict {agree}/{len(judged)}, log-probabilities within {moved:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
