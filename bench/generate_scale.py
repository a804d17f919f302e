"""Benchmark: does `apprentice generate` slow down as the run grows? A long Alpaca-strategy run against a teacher
that answers at once, and the request rate in each twentieth of the run, from the call record's time stamps.

    python bench/generate_scale.py                         # 52,000 records, --concurrency 32
    python bench/generate_scale.py --num 8000 --concurrency 16

The teacher is bench/generate_throughput.py's scripted server in a process of its own, with no delay: each Alpaca
prompt gets 4 new tasks made of invented words, so every one is new and kept, and the client alone sets the pace.
Goal (issue 17): the rate over the last 5% of the requests at least 80% of the rate over the first 5%, and the
process's CPU time (user and system, printed) bounded by the work, not growing with the run.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from apprentice.generate.config import GenerateConfig
from apprentice.generate.run import generate

BENCH = Path(__file__).resolve().parent


def rates(db_path: Path, slices: int = 20) -> list[float]:
    """Requests per second in each of `slices` equal shares of the run's requests, in the order they were made."""
    db = sqlite3.connect(db_path)
    stamps = [row[0] for row in db.execute("SELECT created FROM calls ORDER BY created")]
    db.close()
    out = []
    for k in range(slices):
        first, last = k * len(stamps) // slices, (k + 1) * len(stamps) // slices - 1
        out.append((last - first) / max(1e-9, stamps[last] - stamps[first]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=52_000, help="records to generate")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(BENCH / "generate_throughput.py"), "--serve", "--delay", "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.monotonic()
            result = generate(GenerateConfig(teacher=f"openai:scripted@{url}", out=out, num=args.num,
                                             concurrency=args.concurrency, strategy="alpaca", api="completion"),
                              Console(stderr=True, quiet=True))
            seconds = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            per_slice = rates(out / "requests.sqlite")
    finally:
        server.stdin.close()
        server.wait(10)
    print(f"{result.stats.kept} records from {result.stats.answers} requests in {seconds:.1f} s "
          f"({result.stats.answers / seconds:.1f} req/s); client CPU {after.ru_utime - before.ru_utime:.1f} s user, "
          f"{after.ru_stime - before.ru_stime:.1f} s system")
    print("req/s per twentieth of the requests: " + " ".join(f"{rate:.0f}" for rate in per_slice))
    print(f"first 5%: {per_slice[0]:.1f} req/s, last 5%: {per_slice[-1]:.1f} req/s, "
          f"ratio {per_slice[-1] / per_slice[0]:.2f} (goal >= 0.80)")


if __name__ == "__main__":
    main()
