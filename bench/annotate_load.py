"""Benchmark: vote latency of `apprentice annotate` under 50 concurrent annotators on 127.0.0.1.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/annotate_load.py                      # 50 annotators x 100 votes, paced and flat out
    python bench/annotate_load.py --annotators 10 --votes 20 --think 0.2

Each annotator is a thread posting the app's plain HTML forms over its own keep-alive connection (the load driver
of tests/test_annotate_load.py): GET /vote, POST /vote, POST /next, until nothing is left for them. There are
`--votes` items and every annotator votes on every one (votes per item = annotators), so the run stores exactly
annotators x votes votes. Latency is the round trip of POST /vote, which returns only after the vote is committed
to disk (SQLite WAL, synchronous=FULL).

Two loads:
* paced: before each vote an annotator pauses 0 to 2 x `--think` seconds (1 s on average: 50 votes/s offered in
  all, far faster than people read two answers);
* flat out: no pause; every annotator has a request in flight all the time, so latency is mostly queueing and
  measures what the server can take.

The baseline, measured in the same run on the same load, is the same server committing every write in a
transaction of its own (`max_batch=1`): one fsync per vote, per reservation and per "next". The app itself commits
the writes that queue up while one commit is on disk together (`max_batch=64`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from annotate_support import AnnotateServer, percentile, run_load, write_outputs  # noqa: E402
from apprentice.annotate import store  # noqa: E402
from apprentice.evaluate.outputs import join_outputs, load_outputs  # noqa: E402


class BenchServer(AnnotateServer):
    """The app in a subprocess with a chosen `max_batch` (the CLI always uses the default)."""

    def __init__(self, a: Path, b: Path, db: Path, votes_per_item: int, max_batch: int):
        connection = store.create_db(db)
        store.import_pairs(connection, join_outputs(load_outputs(a), load_outputs(b)))
        connection.close()
        self.max_batch = max_batch
        self.votes_per_item = votes_per_item
        super().__init__(a, b, db, votes_per_item)

    def command(self) -> list[str]:
        code = ("import uvicorn; from apprentice.annotate.server import create_app; "
                f"uvicorn.run(create_app({str(self.db)!r}, {self.votes_per_item}, max_batch={self.max_batch}), "
                f"host='127.0.0.1', port={self.port}, log_level='warning')")
        return [sys.executable, "-c", code]


def measure(workdir: Path, annotators: int, votes: int, think_s: float, max_batch: int) -> dict:
    workdir.mkdir(parents=True)
    a, b = write_outputs(workdir / "outputs", votes)
    db = workdir / "votes.sqlite"
    with BenchServer(a, b, db, annotators, max_batch) as server:
        connection = store.connect(db)
        links = {f"a{k:02d}": f"{server.url}/a/{store.add_annotator(connection, f'a{k:02d}')}"
                 for k in range(annotators)}
        result = run_load(server, links, think_s=think_s)
        stored = connection.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        connection.close()
    assert stored == annotators * votes == len(result.acknowledged), (stored, len(result.acknowledged))
    ms = [1000 * s for s in result.latencies_s]
    return {"votes": stored, "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms),
            "wall": result.wall_s, "votes_per_s": stored / result.wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=50, help="concurrent annotators (threads)")
    parser.add_argument("--votes", type=int, default=100, help="votes per annotator (= items)")
    parser.add_argument("--think", type=float, default=1.0, help="mean pause before a vote in the paced load, s")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for load, think in (("paced", args.think), ("flat out", 0.0)):
            for name, max_batch in (("each write alone (baseline)", 1), ("group commit", 64)):
                result = measure(Path(tmp) / f"{load}-{max_batch}".replace(" ", "_"), args.annotators,
                                 args.votes, think, max_batch)
                rows.append((load, name, result))
                print(f"{load:8} {name:28} {result['votes']} votes  p50 {result['p50']:6.1f} ms  "
                      f"p99 {result['p99']:6.1f} ms  max {result['max']:6.1f} ms  "
                      f"{result['votes_per_s']:6.1f} votes/s  {result['wall']:5.1f} s", flush=True)
    print("\n| load | commits | votes | p50 ms | p99 ms | max ms | votes/s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for load, name, r in rows:
        print(f"| {load} | {name} | {r['votes']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
              f"{r['votes_per_s']:.1f} | {r['wall']:.1f} |")


if __name__ == "__main__":
    main()
