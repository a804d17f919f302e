"""Benchmark: ROUGE-L near-duplicate removal, `RougeLIndex` against Stanford Alpaca's method, on three streams.

Run by hand (results go to docs/BENCHMARKS.md):

    python bench/dedup.py                                # bench stream, 52K, baseline on the first 2,000
    python bench/dedup.py --stream templated --baseline 500 --scaling 4
    python bench/dedup.py --stream zipf --size 5000 --baseline 1000

Every stream is drawn with `random.Random(seed)`, so it is the same on every run.

bench: the 1,232 real instructions in ../shared/data (175 Self-Instruct seeds, 252 user-oriented instructions,
805 AlpacaEval instructions) come first, in that order; every later item is a variant of one or two of them:

* light (10%): one real instruction with 1-2 edits; almost all are near duplicates;
* medium (25%): one real instruction with 3-7 edits; many are near duplicates, many not;
* spliced (65%): the first third to two thirds of one real instruction joined to the last two thirds of another,
  then 0-3 edits: new "instructions" that still share words and phrasing with earlier ones, as a teacher's
  paraphrases do.

  With 1,232 sources the stream grows more repetitive as it goes, as a long generation run does: of 52,000 items,
  29,685 (57%) are near duplicates (48% of the first 5,000 after the real ones, 63% of the last 5,000). An edit is
  one of: drop a word, swap two neighbouring words, replace a word by a near synonym from a small table, add a
  polite prefix ("Please", "Can you", ...), or add a suffix phrase ("Be concise.", ...).

templated: one frame of 9 words around 6 words drawn uniformly from 10,000 made-up words ("Write a short story
  about W and W in which W W meets W W."). Two instructions share the whole frame, so every pair scores at least
  0.6 and almost everything is kept: the case where an index that looks at every stored instruction sharing a
  frequent token goes quadratic.

zipf: a leading verb (one of 12), then 2-10 words, each a stop word with probability 0.35, else a made-up word;
  both drawn with Zipf weights 1/rank (40 stop words, 5,000 made-up words): frequent tokens everywhere ("the" is
  one token in 12), most items kept.

smallvocab: a leading verb (one of 12), "the", then 8 words drawn uniformly from only 400 made-up words; one item in
  five is an earlier one with one or two words replaced (a near duplicate, F >= 0.8). What a teacher that reuses a
  small vocabulary writes (bench/generate_scale.py's teacher is one): every word recurs, so every posting list grows
  with the index however rarely its word is ranked.

The baseline is Stanford's loop (generate_instruction.py): tokenize the candidate with rouge_score's tokenizer, then
`Pool(2).map(partial(rouge_scorer._score_lcs, candidate_tokens), kept_tokens)` with a new pool per candidate, keep
when every F <= 0.7. It runs on a prefix of the stream (it would take hours on all of it); the index runs on the same
prefix, the decisions must be identical and so must the scores of the removed items (the match above the threshold
is exact; below it the index reports the best candidate it examined, see rouge.py), and the speedup is the ratio of
the two times. The index is then timed alone on the whole stream, as `apprentice dedup` uses it: `query`, then `add`
when kept. `--scaling 4` also times it on the first quarter of the stream and prints log4(time ratio).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from rouge_score import rouge_scorer

from apprentice.generate.rouge import RougeLIndex, tokenize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SYNONYMS = {
    "write": "compose", "give": "provide", "list": "enumerate", "describe": "explain", "create": "generate",
    "short": "brief", "story": "tale", "explain": "clarify", "summarize": "sum up", "generate": "produce",
    "following": "given", "sentence": "phrase", "text": "passage", "make": "build", "find": "identify",
    "good": "great", "best": "top", "ways": "methods", "tips": "suggestions", "help": "assist", "use": "employ",
    "show": "demonstrate", "tell": "inform", "people": "persons", "important": "essential", "new": "novel",
    "simple": "easy", "different": "distinct", "example": "instance", "examples": "instances", "about": "on",
}
PREFIXES = ["Please", "Can you", "I want you to", "Kindly", "Your task:", "Now,"]
SUFFIXES = ["Be concise.", "Explain your answer.", "Keep it short.", "Use simple words.", "Think step by step."]


def real_instructions() -> list[str]:
    def jsonl(name: str) -> list[str]:
        return [json.loads(line)["instruction"] for line in (DATA / "self_instruct" / name).read_text().splitlines()]

    evals = json.loads((DATA / "alpaca_eval" / "text_davinci_003.model_outputs.json").read_text())
    return jsonl("seed_tasks.jsonl") + jsonl("user_oriented_instructions.jsonl") + [row["instruction"] for row in evals]


def edit(words: list[str], rng: random.Random) -> list[str]:
    words = list(words)
    kind = rng.randrange(5)
    if kind == 0 and len(words) > 4:
        del words[rng.randrange(len(words))]
    elif kind == 1 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == 2:
        swappable = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
        if swappable:
            i = rng.choice(swappable)
            words[i] = SYNONYMS[words[i].lower()]
    elif kind == 3:
        words = rng.choice(PREFIXES).split() + words
    else:
        words = words + rng.choice(SUFFIXES).split()
    return words


def build_stream(size: int, seed: int = 0) -> list[str]:
    real = real_instructions()
    rng = random.Random(seed)
    stream = list(real[:size])
    while len(stream) < size:
        roll = rng.random()
        words = rng.choice(real).split()
        if roll < 0.10:
            edits = rng.randint(1, 2)
        elif roll < 0.35:
            edits = rng.randint(3, 7)
        else:
            other = rng.choice(real).split()
            words = words[: rng.randint(len(words) // 3, 2 * len(words) // 3)] + other[len(other) // 3 :]
            edits = rng.randint(0, 3)
        for _ in range(edits):
            words = edit(words, rng)
        stream.append(" ".join(words))
    return stream


SYLLABLES = ["ba", "ko", "ri", "mu", "te", "sa", "lo", "ne", "vi", "du", "ka", "pe", "zo", "fi", "ga", "ru", "mo",
             "li", "ta", "ze", "no", "pu", "si", "ho", "we", "ja", "ke", "di", "so", "ly"]
FRAME = "Write a short story about {} and {} in which {} {} meets {} {}."
STOP_WORDS = ("the a an of to in for and or on with by at from as is are be this that it its your you into "
              "about than then over under each every all any some one two which what how").split()
VERBS = ["Write", "Give", "List", "Describe", "Explain", "Create", "Generate", "Summarize", "Find", "Name",
         "Suggest", "Classify"]


def made_up_words(count: int) -> list[str]:
    """`count` distinct pronounceable words of three syllables (up to 27,000)."""
    k = len(SYLLABLES)
    return [SYLLABLES[i % k] + SYLLABLES[i // k % k] + SYLLABLES[i // (k * k)] for i in range(count)]


def templated_stream(size: int, seed: int = 0) -> list[str]:
    words = made_up_words(10_000)
    rng = random.Random(seed)
    return [FRAME.format(*(rng.choice(words) for _ in range(6))) for _ in range(size)]


def zipf_weights(count: int) -> list[float]:
    return list(itertools.accumulate(1 / rank for rank in range(1, count + 1)))


def zipf_stream(size: int, seed: int = 0) -> list[str]:
    words = made_up_words(5_000)
    rng = random.Random(seed)
    word_weights, stop_weights = zipf_weights(len(words)), zipf_weights(len(STOP_WORDS))
    stream = []
    for _ in range(size):
        length = rng.randint(2, 10)
        content = iter(rng.choices(words, cum_weights=word_weights, k=length))
        stops = iter(rng.choices(STOP_WORDS, cum_weights=stop_weights, k=length))
        body = [next(stops) if rng.random() < 0.35 else next(content) for _ in range(length)]
        stream.append(" ".join([rng.choice(VERBS)] + body) + ".")
    return stream


def small_vocabulary_stream(size: int, seed: int = 0) -> list[str]:
    words = made_up_words(400)
    rng = random.Random(seed)
    stream: list[str] = []
    for _ in range(size):
        if stream and rng.random() < 0.2:
            tokens = rng.choice(stream).rstrip(".").split()
            for position in rng.sample(range(2, len(tokens)), rng.randint(1, 2)):
                tokens[position] = rng.choice(words)
        else:
            tokens = [rng.choice(VERBS), "the"] + [rng.choice(words) for _ in range(8)]
        stream.append(" ".join(tokens) + ".")
    return stream


STREAMS = {"bench": build_stream, "templated": templated_stream, "zipf": zipf_stream,
           "smallvocab": small_vocabulary_stream}


def stanford(stream: list[str], threshold: float) -> tuple[list[bool], list[float], int]:
    """Stanford's dedup: every candidate against every kept instruction, a process pool of 2 per candidate."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept_tokens: list[list[str]] = []
    decisions, best, pairs = [], [], 0
    for instruction in stream:
        tokens = scorer._tokenizer.tokenize(instruction)
        if kept_tokens:
            with Pool(2) as pool:
                scores = [s.fmeasure for s in pool.map(partial(rouge_scorer._score_lcs, tokens), kept_tokens)]
        else:
            scores = [0.0]
        pairs += len(kept_tokens)
        keep = max(scores) <= threshold
        decisions.append(keep)
        best.append(max(scores))
        if keep:
            kept_tokens.append(tokens)
    return decisions, best, pairs


def indexed(stream: list[str], threshold: float) -> tuple[list[bool], list[float], int]:
    index = RougeLIndex(threshold)
    decisions, best, pairs = [], [], 0
    for instruction in stream:
        match = index.query(instruction)
        pairs += len(index)
        keep = match.score <= threshold
        decisions.append(keep)
        best.append(match.score)
        if keep:
            index.add(instruction)
    return decisions, best, pairs


def timed(stream: list[str], threshold: float) -> tuple[list[bool], list[float], int, float]:
    start = time.perf_counter()
    keep, best, pairs = indexed(stream, threshold)
    return keep, best, pairs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", choices=sorted(STREAMS), default="bench", help="which stream (default bench)")
    parser.add_argument("--size", type=int, default=52_000, help="stream length (default 52,000)")
    parser.add_argument("--baseline", type=int, default=2_000, help="prefix on which the baseline runs (0: skip)")
    parser.add_argument("--scaling", type=int, default=0, help="also time the first 1/N of the stream (0: skip)")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stream = STREAMS[args.stream](args.size, args.seed)
    print(f"{args.stream} stream: {len(stream):,} instructions ({len(set(stream)):,} distinct)"
          f", {sum(len(tokenize(text)) for text in stream) / len(stream):.1f} tokens on average")

    if args.baseline:
        prefix = stream[: args.baseline]
        start = time.perf_counter()
        base_keep, base_best, base_pairs = stanford(prefix, args.threshold)
        base_time = time.perf_counter() - start
        ours_keep, ours_best, _, ours_time = timed(prefix, args.threshold)
        assert ours_keep == base_keep, "decisions differ"
        assert all(ours == base for ours, base, keep in zip(ours_best, base_best, base_keep) if not keep), \
            "scores of removed items differ"
        print(f"prefix {len(prefix):,}: same decisions ({sum(base_keep):,} kept, {len(prefix) - sum(base_keep):,}"
              f" removed, the same scores for the removed), {base_pairs:,} pairs")
        print(f"  baseline (Stanford, 2 workers): {base_time:.2f} s, {base_time / base_pairs * 1e6:.1f} µs per pair")
        print(f"  RougeLIndex:                    {ours_time:.3f} s")
        print(f"  speedup: {base_time / ours_time:,.0f}x")

    if args.scaling:
        part = stream[: len(stream) // args.scaling]
        part_time = timed(part, args.threshold)[3]
        print(f"first {len(part):,}: RougeLIndex {part_time:.2f} s")
    keep, _, pairs, elapsed = timed(stream, args.threshold)
    print(f"full stream {len(stream):,}: {sum(keep):,} kept, {len(stream) - sum(keep):,} removed, "
          f"{pairs:,} pairs a brute-force loop would score")
    print(f"  RougeLIndex: {elapsed:.2f} s ({elapsed / len(stream) * 1e6:.0f} µs per candidate)")
    if args.scaling:
        print(f"  scaling exponent log{args.scaling}({elapsed:.2f} / {part_time:.2f}) = "
              f"{math.log(elapsed / part_time, args.scaling):.2f}")
    if args.baseline:
        projected = pairs * base_time / base_pairs
        print(f"  baseline projected at its measured per-pair cost: {projected / 3600:.1f} h "
              f"({projected / elapsed:,.0f}x)")


if __name__ == "__main__":
    main()
