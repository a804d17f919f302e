"""Benchmark: does `apprentice generate` slow down as the run grows? A long Alpaca-strategy run against a teacher
that answers at once, and the request rate in each twentieth of the run, from the call record's time stamps.

    python bench/generate_scale.py                         # 52,000 records, --concurrency 32
    python bench/generate_scale.py --repeat 5              # five runs, and the median of each measure
    python bench/generate_scale.py --num 8000 --concurrency 16

The teacher is bench/generate_throughput.py's scripted server in a process of its own, with no delay: each Alpaca
prompt gets 4 new tasks made of invented words, so every one is new and kept, and the client alone sets the pace.
Goal (issue 17): the rate over the last 5% of the requests at least 80% of the rate over the first 5%, and the
process's CPU time (user and system, printed) bounded by the work, not growing with the run.

On a shared machine one twentieth of a run (about 2.5 s) is noisy: a neighbour's job in the first or last one moves
the ratio by a third. So the client's CPU time per request is measured in each twentieth too (a thread samples the
process's CPU clock every 50 ms), which a neighbour barely moves, and `--repeat` gives the median of several runs.
"""

from __future__ import annotations

import argparse
import bisect
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from apprentice.generate.config import GenerateConfig
from apprentice.generate.run import generate

BENCH = Path(__file__).resolve().parent


SAMPLE_EVERY_S = 0.05


class CpuClock:
    """Samples (wall clock, process CPU seconds) in a thread, so the CPU used between two call-record time stamps
    can be read off afterwards."""

    def __init__(self) -> None:
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuClock":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.walls.append(time.time())
            self.cpus.append(time.process_time())
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def at(self, wall: float) -> float:
        """Process CPU seconds at wall-clock time `wall`, interpolated between the samples around it."""
        k = min(max(1, bisect.bisect_left(self.walls, wall)), len(self.walls) - 1)
        w0, w1, c0, c1 = self.walls[k - 1], self.walls[k], self.cpus[k - 1], self.cpus[k]
        return c0 + (c1 - c0) * (wall - w0) / max(1e-9, w1 - w0)


def slices(db_path: Path, clock: CpuClock, count: int = 20) -> list[tuple[float, float]]:
    """(requests per second, client CPU ms per request) in each of `count` equal shares of the run's requests, in
    the order they were made."""
    db = sqlite3.connect(db_path)
    stamps = [row[0] for row in db.execute("SELECT created FROM calls ORDER BY created")]
    db.close()
    out = []
    for k in range(count):
        first, last = k * len(stamps) // count, (k + 1) * len(stamps) // count - 1
        requests, seconds = last - first, max(1e-9, stamps[last] - stamps[first])
        cpu = clock.at(stamps[last]) - clock.at(stamps[first])
        out.append((requests / seconds, 1000 * cpu / requests))
    return out


def run_once(url: str, num: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        with CpuClock() as clock:
            result = generate(GenerateConfig(teacher=f"openai:scripted@{url}", out=out, num=num,
                                             concurrency=concurrency, strategy="alpaca", api="completion"),
                              Console(stderr=True, quiet=True))
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        per_slice = slices(out / "requests.sqlite", clock)
    rates, cpu = [rate for rate, _ in per_slice], [ms for _, ms in per_slice]
    print(f"{result.stats.kept} records from {result.stats.answers} requests in {seconds:.1f} s "
          f"({result.stats.answers / seconds:.1f} req/s); client CPU {after.ru_utime - before.ru_utime:.1f} s user, "
          f"{after.ru_stime - before.ru_stime:.1f} s system")
    print("req/s per twentieth of the requests: " + " ".join(f"{rate:.0f}" for rate in rates))
    print("client CPU ms per request, per twentieth: " + " ".join(f"{ms:.2f}" for ms in cpu))
    run = {"seconds": seconds, "first": rates[0], "last": rates[-1], "ratio": rates[-1] / rates[0],
           "cpu_first": cpu[0], "cpu_last": cpu[-1], "cpu_ratio": cpu[0] / cpu[-1]}
    print(f"first 5%: {run['first']:.1f} req/s at {run['cpu_first']:.2f} ms CPU each; last 5%: {run['last']:.1f} "
          f"req/s at {run['cpu_last']:.2f} ms; rate ratio {run['ratio']:.2f} (goal >= 0.80), CPU-per-request "
          f"ratio first/last {run['cpu_ratio']:.2f}", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=52_000, help="records to generate")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--repeat", type=int, default=1, help="runs; with more than one, the median of each measure")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(BENCH / "generate_throughput.py"), "--serve", "--delay", "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        runs = [run_once(url, args.num, args.concurrency) for _ in range(args.repeat)]
    finally:
        server.stdin.close()
        server.wait(10)
    if len(runs) > 1:
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"median of {len(runs)} runs: {median['seconds']:.1f} s; first 5% {median['first']:.1f} req/s, last 5% "
              f"{median['last']:.1f} req/s, rate ratio {median['ratio']:.2f} (each run: "
              + ", ".join(f"{run['ratio']:.2f}" for run in runs) + f"); CPU-per-request ratio {median['cpu_ratio']:.2f}"
              " (each run: " + ", ".join(f"{run['cpu_ratio']:.2f}" for run in runs) + ")")


if __name__ == "__main__":
    main()
