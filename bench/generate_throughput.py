"""Benchmark: requests per second of `apprentice generate` against a teacher that answers after a fixed delay.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/generate_throughput.py                          # delay 100 ms, concurrency 16
    python bench/generate_throughput.py --delay 0.1 --concurrency 4 16 32
    python bench/generate_throughput.py --concurrency 4 16 32 --waves 100   # longer runs: steady state
    python bench/generate_throughput.py --concurrency 4 16 --prompts-per-request 5   # alpaca, 5 prompts a request

The teacher is an OpenAI-compatible HTTP server on 127.0.0.1 (tests/servers.py's ScriptedServer, run in a process
of its own so that it does not share the client's interpreter) that sleeps `--delay` seconds, then answers a
bootstrap prompt with 8 new instructions and an instance prompt with an input and an output (self-instruct, chat).
With `--prompts-per-request N` the runs use the alpaca strategy on the completion API instead, N prompts per HTTP
request, and the teacher writes 4 tasks for each prompt of the list. Its texts are drawn from a random generator
seeded by the prompt, made of invented words, so every instruction is new (no ROUGE-L near duplicates) and passes the
filters: every request does useful work.

With a fixed delay, no loop can beat `concurrency x N / delay` prompts per second (N = 1 without
`--prompts-per-request`); the goal is >= 90% of that bound.
The same server is then driven by the sequential loop (the whole `generate` run with `--concurrency 1`), so the
speed-up of keeping requests in flight is measured in the same run. For reference, the backend's own ceiling is
measured too: one `Model.stream` call over a fixed list of as many requests (no planning, parsing, filtering or
writing), with the same concurrency. Each run starts from an empty run directory
(nothing comes from the response cache); the time counted is the run's own, from its first request to its last
record (`stats.json`'s requests_per_second), so model and seed loading are not part of it.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import ScriptedServer, chat_reply, completion_reply, invented_words

from apprentice.generate.config import GenerateConfig
from apprentice.generate.run import generate
from apprentice.models import Request, load_model
from apprentice.models.base import BackendOptions

_VERBS = ["Describe", "Explain", "Compare", "Summarize", "Rewrite", "List", "Suggest", "Outline", "Evaluate"]


ALPACA_TASKS = 4  # tasks the teacher writes for each alpaca prompt


def answer_text(prompt: str) -> str:
    rng = random.Random(prompt)
    if prompt.endswith("Instruction:"):  # alpaca: tasks from the number the prompt ends with
        first = int(prompt.rsplit("###\n", 1)[1].split(".")[0])
        items = [f"{n}. Instruction: {rng.choice(_VERBS)} the {invented_words(rng, 8)}.\n{n}. Input:\n<noinput>\n"
                 f"{n}. Output:\n{invented_words(rng, 20).capitalize()}." for n in range(first, first + ALPACA_TASKS)]
        return "\n###\n".join(items)[len(f"{first}. Instruction:"):]  # the prompt ends with the first marker
    if "numbered list" in prompt:  # bootstrap: 8 new instructions, numbered from 9
        return "\n".join(f"{n}. {rng.choice(_VERBS)} the {invented_words(rng, 8)}." for n in range(9, 17))
    return f"Input: {invented_words(rng, 6)}\nOutput: {invented_words(rng, 20).capitalize()}."  # instance


def teacher(delay: float):
    """A ScriptedServer handler: fixed delay, then a valid answer to whichever prompt (or list of prompts) it got."""

    def handle(path: str, body: dict):
        if "messages" in body:
            prompt = body["messages"][-1]["content"]
            text = answer_text(prompt)
            reply = chat_reply(text, prompt_tokens=len(prompt) // 4, completion_tokens=len(text) // 4)
        else:
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            reply = completion_reply([answer_text(prompt) for prompt in prompts])
        reply.delay = delay
        return reply

    return handle


def measure(url: str, concurrency: int, num: int, per_request: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        how = (dict(strategy="self-instruct") if per_request == 1 else
               dict(strategy="alpaca", api="completion", prompts_per_request=per_request))
        config = GenerateConfig(teacher=f"openai:scripted@{url}", out=Path(tmp) / "run", num=num,
                                concurrency=concurrency, **how)
        stats = generate(config, Console(stderr=True, quiet=True)).stats
        return {"requests": stats.answers, "seconds": stats.seconds, "rps": stats.answers / stats.seconds}


def ceiling(url: str, concurrency: int, count: int, per_request: int) -> float:
    """Prompts per second of one plain stream call over `count` instance prompts."""
    model = load_model(f"openai:scripted@{url}", BackendOptions(concurrency=concurrency,
                                                                prompts_per_request=per_request))
    content = [f"Task: do thing {i}" for i in range(count)]
    requests = ([Request(messages=({"role": "user", "content": text},)) for text in content] if per_request == 1
                else [Request(prompt=text) for text in content])
    started = time.monotonic()
    model.generate(requests)
    seconds = time.monotonic() - started
    model.close()
    return count / seconds


def serve(delay: float) -> None:
    """The teacher process: print the URL, serve until stdin closes."""
    with ScriptedServer(teacher(delay)) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the teacher waits before each answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="requests in flight to measure")
    parser.add_argument("--waves", type=int, default=40, help="requests per run = waves x concurrency (about)")
    parser.add_argument("--sequential-requests", type=int, default=40, help="about this many for the baseline")
    parser.add_argument("--prompts-per-request", type=int, default=1,
                        help="N > 1: alpaca strategy, completion API, N prompts per HTTP request")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.delay)
        return

    server = subprocess.Popen([sys.executable, __file__, "--serve", "--delay", str(args.delay)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        per_request = args.prompts_per_request
        # records per prompt: self-instruct keeps about 8 of 9 answers (bootstraps give none); alpaca keeps 4 per prompt
        per_prompt = 8 / 9 if per_request == 1 else ALPACA_TASKS
        sequential = measure(url, 1, max(8, int(args.sequential_requests * per_request * per_prompt)), per_request)
        rows = []
        for concurrency in args.concurrency:
            run = measure(url, concurrency, max(8, int(args.waves * concurrency * per_request * per_prompt)),
                          per_request)
            rows.append((concurrency, run, ceiling(url, concurrency, run["requests"], per_request)))
    finally:
        server.stdin.close()
        server.wait(10)

    bound1 = per_request / args.delay
    print(f"teacher delay {args.delay * 1000:.0f} ms, {per_request} prompt(s) per HTTP request; prompts per second "
          f"(req/s below). Sequential loop (--concurrency 1): {sequential['rps']:.2f} req/s "
          f"({sequential['requests']} requests in {sequential['seconds']:.2f} s; bound {bound1:.1f}, "
          f"{100 * sequential['rps'] / bound1:.0f}%)")
    print("| concurrency | requests | seconds | req/s | bound (N/delay) | % of bound | x sequential "
          "| one stream call, req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for concurrency, run, best in rows:
        bound = concurrency * per_request / args.delay
        print(f"| {concurrency} | {run['requests']} | {run['seconds']:.2f} | {run['rps']:.1f} | {bound:.0f} | "
              f"{100 * run['rps'] / bound:.1f}% | {run['rps'] / sequential['rps']:.1f}x | {best:.1f} |")


if __name__ == "__main__":
    main()
