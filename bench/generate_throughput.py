"""Benchmark: requests per second of `apprentice generate` against a teacher that answers after a fixed delay.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/generate_throughput.py                          # delay 100 ms, concurrency 16
    python bench/generate_throughput.py --delay 0.1 --concurrency 8 16 32

The teacher is an OpenAI-compatible HTTP server on 127.0.0.1 (tests/servers.py's ScriptedServer) that sleeps
`--delay` seconds, then answers a bootstrap prompt with 8 new instructions and an instance prompt with an input and
an output. Its texts are drawn from a random generator seeded by the prompt, made of invented words, so every
instruction is new (no ROUGE-L near duplicates) and passes the filters: every request does useful work.

With a fixed delay, no loop can beat `concurrency / delay` requests per second; the goal is >= 90% of that bound.
The same server is then driven by the sequential loop (the whole `generate` run with `--concurrency 1`), so the
speed-up of keeping requests in flight is measured in the same run. Each run starts from an empty run directory
(nothing comes from the response cache); the time counted is the run's own, from its first request to its last
record (`stats.json`'s requests_per_second), so model and seed loading are not part of it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import ScriptedServer, chat_reply  # noqa: E402

from apprentice.generate.config import GenerateConfig  # noqa: E402
from apprentice.generate.run import generate  # noqa: E402

_SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vor", "pel", "dun", "sa", "quor", "bri", "nel", "tho", "zan", "fi"]
_VERBS = ["Describe", "Explain", "Compare", "Summarize", "Rewrite", "List", "Suggest", "Outline", "Evaluate"]


def _words(rng: random.Random, count: int) -> str:
    return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(count))


def teacher(delay: float):
    """A ScriptedServer handler: fixed delay, then a valid answer to whichever prompt it got."""

    def handle(path: str, body: dict):
        prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
        rng = random.Random(prompt)
        if "numbered list" in prompt:  # bootstrap: 8 new instructions, numbered from 9
            text = "\n".join(f"{n}. {rng.choice(_VERBS)} the {_words(rng, 8)}." for n in range(9, 17))
        else:  # instance: an input and an output
            text = f"Input: {_words(rng, 6)}\nOutput: {_words(rng, 20).capitalize()}."
        reply = chat_reply(text, prompt_tokens=len(prompt) // 4, completion_tokens=len(text) // 4)
        reply.delay = delay
        return reply

    return handle


def measure(url: str, concurrency: int, num: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(teacher=f"openai:scripted@{url}", out=Path(tmp) / "run", num=num,
                                concurrency=concurrency, strategy="self-instruct")
        result = generate(config)
        stats = result.stats
        return {"requests": stats.answers, "seconds": stats.seconds, "rps": stats.answers / stats.seconds,
                "kept": stats.kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the teacher waits before each answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="requests in flight to measure")
    parser.add_argument("--waves", type=int, default=12, help="requests per run = waves x concurrency (about)")
    parser.add_argument("--sequential-requests", type=int, default=40, help="about this many for the baseline")
    args = parser.parse_args()

    with ScriptedServer(teacher(args.delay)) as server:
        rows = []
        for concurrency in args.concurrency:
            run = measure(server.url, concurrency, num=max(8, args.waves * concurrency * 8 // 9))
            bound = concurrency / args.delay
            rows.append((concurrency, run, bound))
        sequential = measure(server.url, 1, num=max(8, args.sequential_requests * 8 // 9))

    print(f"teacher delay {args.delay * 1000:.0f} ms; sequential loop: {sequential['rps']:.2f} req/s "
          f"({sequential['requests']} requests in {sequential['seconds']:.2f} s; bound {1 / args.delay:.1f})")
    print("| concurrency | requests | seconds | req/s | bound (N/delay) | % of bound | x sequential |")
    print("|---|---|---|---|---|---|---|")
    for concurrency, run, bound in rows:
        print(f"| {concurrency} | {run['requests']} | {run['seconds']:.2f} | {run['rps']:.1f} | {bound:.0f} | "
              f"{100 * run['rps'] / bound:.1f}% | {run['rps'] / sequential['rps']:.1f}x |")


if __name__ == "__main__":
    main()
