"""Benchmark: how close the HTTP backend's rate limiter gets to a server's limit, and how many 429s it draws.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/ratelimit.py                              # 50 requests/s, sliding 1 s window, 20 s per run
    python bench/ratelimit.py --window 0.2                 # the same limit counted over 200 ms windows
    python bench/ratelimit.py --counting bucket --window 0.2   # OpenAI-style: a bucket of 10 refilled at 50/s
    python bench/ratelimit.py --rate 20 --seconds 30 --concurrency 128

The teacher is an OpenAI-compatible server on 127.0.0.1 in a process of its own (tests/ratelimit_server.py's
RateLimitedTeacher on tests/servers.py's ScriptedServer) that admits at most `--rate` x `--window` requests in any
`--window` seconds (`--counting sliding`, the default and the strictest way to count) or from a bucket of that many
refilled at `--rate` (`--counting bucket`), answers the others 429 without Retry-After, and answers an admitted
request after `--delay` seconds. The client is one `Model.generate` call over `--rate` x
`--seconds` chat requests with `--concurrency` in flight, far above the `rate x delay` that the limit needs, so only
the limiter (or the 429s) holds it back. Three runs, each against a fresh server:

- no limiter (the baseline: the backend as it was, retries with exponential backoff after each 429);
- `--rpm` at the allowed rate (`rate x 60`), the server sending no x-ratelimit-* headers (as vLLM);
- no `--rpm`, the server sending OpenAI's x-ratelimit-limit/remaining/reset-requests headers.

Printed per run: requests answered, seconds (first request to last answer), the rate reached as a share of the
allowed rate, and the share of HTTP attempts answered 429. Goal: at least 95% of the allowed rate with at most 1% of
attempts answered 429.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ratelimit_server import BUCKET, SLIDING, RateLimitedTeacher
from servers import Reply, ScriptedServer

from apprentice.models import Request, load_model
from apprentice.models.base import FAILED, BackendOptions


def serve(rate: float, window: float, counting: str, headers: bool, delay: float) -> None:
    """The teacher process: print the URL, serve until stdin closes; GET /v1/stats gives its counts."""
    teacher = RateLimitedTeacher(rate, window=window, counting=counting, headers=headers, delay=delay)

    def handle(path: str, body: dict) -> Reply:
        if path.endswith("/stats"):
            return Reply(body={"admitted": len(teacher.admitted), "refused": teacher.refused})
        return teacher(path, body)

    with ScriptedServer(handle) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def measure(args: argparse.Namespace, rpm: float | None, headers: bool) -> dict:
    command = [sys.executable, __file__, "--serve", "--rate", str(args.rate), "--window", str(args.window),
               "--counting", args.counting, "--delay", str(args.delay)] + (["--headers"] if headers else [])
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        model = load_model(f"openai:bench@{url}", BackendOptions(concurrency=args.concurrency, rpm=rpm,
                                                                 keep_going=True))
        count = int(args.rate * args.seconds)
        requests = [Request(messages=({"role": "user", "content": f"Question {i}: why is the sky blue?"},))
                    for i in range(count)]
        started = time.monotonic()
        completions = model.generate(requests)
        seconds = time.monotonic() - started
        model.close()
        stats = httpx.get(f"{url}/stats").json()
    finally:
        server.stdin.close()
        server.wait(10)
    answered = sum(1 for c in completions if c.finish_reason != FAILED)
    attempts = stats["admitted"] + stats["refused"]
    return {"answered": answered, "failed": count - answered, "seconds": seconds,
            "share": answered / seconds / args.rate, "refused": stats["refused"], "attempts": attempts,
            "refused_share": stats["refused"] / attempts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="requests a second the server admits")
    parser.add_argument("--window", type=float, default=1.0, help="seconds over which the server counts them")
    parser.add_argument("--counting", choices=(SLIDING, BUCKET), default=SLIDING, help="how the server counts")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the server takes to answer")
    parser.add_argument("--seconds", type=float, default=20, help="length of each run at the allowed rate")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--headers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.rate, args.window, args.counting, args.headers, args.delay)
        return

    runs = [("no limiter (baseline: backoff after 429s)", None, False),
            (f"--rpm {args.rate * 60:g}, no headers", args.rate * 60, False),
            ("no --rpm, x-ratelimit-* headers", None, True)]
    counted = (f"in any {args.window:g} s window" if args.counting == SLIDING else
               f"from a bucket of {args.rate * args.window:g}")
    print(f"server: {args.rate:g} requests/s {counted}, answers after {args.delay:g} s; "
          f"client: {int(args.rate * args.seconds)} requests, {args.concurrency} in flight")
    print("| client | answered | failed | seconds | % of allowed rate | 429s | % of attempts 429 |")
    print("|---|---|---|---|---|---|---|")
    for name, rpm, headers in runs:
        run = measure(args, rpm, headers)
        print(f"| {name} | {run['answered']} | {run['failed']} | {run['seconds']:.2f} | {100 * run['share']:.1f}% | "
              f"{run['refused']} | {100 * run['refused_share']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
