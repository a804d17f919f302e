"""ROUGE-L and RougeLIndex against rouge_score itself: tokens, scores (==, not approx) and keep/reject decisions.

The index's contract, checked on every stream here against brute force: the same keep/remove decision for every
item; for a near duplicate the exact best score and the lowest id that has it; below the threshold a score the query
really has against the reported instruction (at most the true best), or Match(0.0, None)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from apprentice.generate.rouge import Match, RougeLIndex, f_measure, lcs_length, rouge_l_f, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


@pytest.mark.parametrize("text", [
    "", "   ", "!!! ... ???", "\n\t\r", "Hello, World!", "don't stop-believing", "1,000.50 dollars", "a_b_c",
    "CAPITALS and MiXeD", "café naïve résumé", "İstanbul", "\u212a kelvin", "straße STRASSE", "日本語のテキスト",
    "emoji 🙂 in between", "tabs\tand\nnewlines", "x" * 300, "A1b2 C3d4", "über-cool ÜBER",
])
def test_tokenize_matches_rouge_score(text):
    assert tokenize(text) == SCORER._tokenizer.tokenize(text)


def random_text(rng: random.Random, vocab: list[str], max_len: int) -> str:
    return rng.choice(["", " ", ", "]).join(rng.choice(vocab) for _ in range(rng.randint(0, max_len)))


def test_random_pairs_score_exactly_like_rouge_score():
    rng = random.Random(0)
    small = ["a", "b", "c", "the", "A", "B!", "ß", "é", "日本", "42", "..."]  # repeats, case, punctuation, non-ASCII
    wide = [f"w{i}" for i in range(40)] + small
    for _ in range(3000):
        vocab = small if rng.random() < 0.5 else wide
        target, prediction = random_text(rng, vocab, 25), random_text(rng, vocab, 25)
        assert rouge_l_f(tokenize(target), tokenize(prediction)) == reference(target, prediction), (target, prediction)


def near_threshold_pairs() -> list[tuple[str, str]]:
    """Pairs whose LCS is known and whose F-measure is within 0.02 of 0.7, including exact 0.7 in real numbers."""
    rng = random.Random(1)
    pairs = []
    for m in range(1, 31):
        for n in range(1, 31):
            for lcs in range(1, min(m, n) + 1):
                if abs(2 * lcs / (m + n) - 0.7) < 0.02:
                    target = [f"t{i}" for i in range(m)]
                    kept = sorted(rng.sample(range(m), lcs))
                    prediction = [target[i] for i in kept] + [f"p{i}" for i in range(n - lcs)]
                    rng.shuffle(prediction[lcs:])
                    pairs.append((" ".join(target), " ".join(prediction)))
    return pairs


def test_near_threshold_pairs_give_identical_scores_and_decisions():
    pairs = near_threshold_pairs()
    assert len(pairs) > 200
    exact = 0
    for target, prediction in pairs:
        ours = rouge_l_f(tokenize(target), tokenize(prediction))
        theirs = reference(target, prediction)
        assert ours == theirs and (ours > 0.7) == (theirs > 0.7)
        exact += abs(theirs - 0.7) < 1e-12
    assert exact > 10  # cases where 0.7 is the real value, so only the float expression decides


@pytest.mark.parametrize("lcs,target_len,prediction_len,expected", [
    (0, 0, 5, 0.0), (0, 5, 0, 0.0), (0, 3, 4, 0.0), (3, 3, 3, 1.0), (7, 10, 10, 0.7), (1, 1, 2, 2 / 3),
])
def test_f_measure_table(lcs, target_len, prediction_len, expected):
    assert f_measure(lcs, target_len, prediction_len) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("a,b,expected", [
    ("", "", 0), ("abc", "", 0), ("abc", "abc", 3), ("abcbdab", "bdcaba", 4), ("aaaa", "aa", 2), ("ab", "ba", 1),
    ("x" * 100, "x" * 70 + "y" * 50, 70),
])
def test_lcs_length_table(a, b, expected):
    assert lcs_length(list(a), list(b)) == expected
    assert lcs_length(list(b), list(a)) == expected


def test_index_edge_cases():
    index = RougeLIndex(0.7)
    assert len(index) == 0
    assert index.query("anything at all") == Match(0.0, None)
    assert index.add("!!! ???") == 0  # no tokens: stored, never similar to anything
    assert index.add("Give three tips for staying healthy.") == 1
    assert len(index) == 2
    assert index.query("") == Match(0.0, None)
    assert index.query("Completely unrelated words here") == Match(0.0, None)
    assert index.query("GIVE three tips, for staying healthy!!") == Match(1.0, 1)
    # F = 0.667 <= 0.7, and lengths 3 and 6 cannot exceed 0.7 at all: not a candidate, no match reported.
    assert index.query("Give three tips") == Match(0.0, None)
    assert index.query("Give three tips for staying") == Match(reference("Give three tips for staying",
                                                                         "Give three tips for staying healthy."), 1)
    with pytest.raises(ValueError):
        RougeLIndex(1.5)


@pytest.mark.parametrize("threshold,text,is_duplicate", [
    (0.0, "tips", True),  # any shared token is above 0
    (0.0, "nothing shared", False),
    (1.0, "Give three tips for staying healthy", False),  # nothing is above 1
    (0.5, "give three tips", True),  # F = 2*3/(3+6) = 0.667
    (0.7, "give three tips", False),
])
def test_threshold_is_strict(threshold, text, is_duplicate):
    index = RougeLIndex(threshold)
    index.add("Give three tips for staying healthy.")
    assert (index.query(text).score > threshold) == is_duplicate


def test_many_candidates_and_long_texts_score_exactly():
    """Many candidates sharing frequent tokens, texts over 64 and 256 tokens, repeated tokens."""
    rng = random.Random(2)
    words = "the a of write give list short story poem about three tips for".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 90))) for _ in range(300)]
    texts += [" ".join(rng.choice(words) for _ in range(300)) for _ in range(5)]
    index = RougeLIndex(0.7)
    for text in texts:
        index.add(text)
    tokens = [tokenize(text) for text in texts]
    for query in texts[:5] + texts[-2:] + ["the the the the a a", "write a short poem about three tips"]:
        check_match(index.query(query), [rouge_l_f(tokenize(query), other) for other in tokens], 0.7)


def check_match(match: Match, scores: list[float], threshold: float) -> None:
    """`match` from the index against the brute-force `scores` of the query with every stored instruction."""
    best = max(scores, default=0.0)
    if best > threshold:
        assert match == Match(best, scores.index(best))
    elif match.index is None:
        assert match.score == 0.0
    else:
        assert 0.0 < match.score == scores[match.index] <= best


def walk(stream: list[str], threshold: float) -> tuple[int, int]:
    """Dedup `stream` with the index and by brute force side by side, checking every query; (kept, removed)."""
    index = RougeLIndex(threshold)
    kept: list[list[str]] = []
    for text in stream:
        tokens = tokenize(text)
        scores = [rouge_l_f(tokens, other) for other in kept]
        check_match(index.query(text), scores, threshold)
        if max(scores, default=0.0) <= threshold:
            kept.append(tokens)
            index.add(text)
    return len(kept), len(stream) - len(kept)


def bench_streams():
    """bench/dedup.py's stream generators (templated, zipf, bench), loaded from its file."""
    spec = importlib.util.spec_from_file_location("bench_dedup", Path(__file__).parents[1] / "bench" / "dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STREAMS


@pytest.mark.parametrize("name,size,min_removed", [("templated", 700, 0), ("zipf", 1500, 5), ("bench", 1400, 60),
                                                   ("smallvocab", 1500, 200)])
def test_benchmark_streams_equal_brute_force(shared_data, name, size, min_removed):
    """The benchmark's streams: a shared frame, Zipf words with stop words, variants of real instructions, a small
    vocabulary whose every posting list grows long; enough items to cross several re-rankings of the token order
    (at 64, 128, 256, 512, 1024 stored)."""
    kept, removed = walk(bench_streams()[name](size, seed=1), 0.7)
    assert removed >= min_removed and kept > 64


@pytest.mark.parametrize("name", ["templated", "zipf", "smallvocab"])
def test_benchmark_streams_equal_rouge_score(name):
    """rouge_score's own `_score_lcs` on a small prefix, as Stanford's loop calls it."""
    index = RougeLIndex(0.7)
    kept_tokens: list[list[str]] = []
    for text in bench_streams()[name](150, seed=2):
        tokens = SCORER._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, other).fmeasure for other in kept_tokens]
        check_match(index.query(text), scores, 0.7)
        if max(scores, default=0.0) <= 0.7:
            kept_tokens.append(tokens)
            index.add(text)


def test_near_threshold_pairs_among_many_decide_like_rouge_score():
    """Every near-0.7 pair of the table above, the prediction stored among hundreds of others sharing its tokens:
    the index reports rouge_score's score exactly when it is above 0.7, and nothing above 0.7 otherwise."""
    pairs = near_threshold_pairs()
    # the predictions, then targets with a few tokens renamed: they share the frequent tokens and some rare ones
    stored = [prediction for _, prediction in pairs] + [target.replace("t", "x", 3) for target, _ in pairs[::7]]
    index = RougeLIndex(0.7)
    for text in stored:
        index.add(text)
    stored_tokens = [tokenize(text) for text in stored]
    for position, (target, prediction) in enumerate(pairs):
        scores = [rouge_l_f(tokenize(target), other) for other in stored_tokens]
        assert scores[position] == reference(target, prediction)
        check_match(index.query(target), scores, 0.7)


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.7, 0.9, 1.0])
def test_repeated_tokens_at_every_threshold(threshold):
    """Few distinct tokens, many repeats (the (token, occurrence) features), lengths 1-30, several thresholds."""
    rng = random.Random(4)
    vocab = ["a", "b", "c", "the", "of", "A!", "d"]
    stream = [" ".join(rng.choice(vocab[: rng.randint(2, len(vocab))]) for _ in range(rng.randint(1, 30)))
              for _ in range(400)]
    kept, removed = walk(stream, threshold)
    assert kept >= 1 and (threshold == 1.0 or removed > 0)


def stream_from(shared_data, extra: int) -> list[str]:
    """Real instructions plus deterministic variants: near duplicates, splices, case and punctuation changes,
    non-ASCII, empty and punctuation-only strings."""
    folder = shared_data / "self_instruct"
    real = [json.loads(line)["instruction"] for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl")
            for line in (folder / name).read_text().splitlines()]
    rng = random.Random(3)
    stream = list(real)
    odd = ["", "...", "¿Qué tal?", "日本語の文を翻訳してください。", "Café au lait, s'il vous plaît!"]
    while len(stream) < len(real) + extra:
        words = rng.choice(real).split()
        kind = rng.randrange(6)
        if kind == 0 and len(words) > 3:
            del words[rng.randrange(len(words))]
        elif kind == 1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
        elif kind == 2:
            other = rng.choice(real).split()
            words = words[: len(words) // 2] + other[len(other) // 2 :]
        elif kind == 3:
            words = [w.upper() if rng.random() < 0.3 else w + rng.choice(["", ",", "!"]) for w in words]
        elif kind == 4:
            words += rng.choice(odd).split()
        else:
            words = rng.choice(odd).split()
        stream.append(" ".join(words))
    rng.shuffle(stream)
    return stream


def test_stream_decisions_equal_stanford_loop(shared_data):
    """Stanford's loop with rouge_score's own `_score_lcs` (target = the new instruction) decides the same."""
    stream = stream_from(shared_data, 60)[:240]
    index = RougeLIndex(0.7)
    kept_tokens: list[list[str]] = []
    removed = 0
    for text in stream:
        tokens = SCORER._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, other).fmeasure for other in kept_tokens]
        best = max(scores, default=0.0)
        check_match(index.query(text), scores, 0.7)
        if best <= 0.7:
            kept_tokens.append(tokens)
            index.add(text)
        else:
            removed += 1
    assert removed > 10


def test_long_stream_decisions_equal_brute_force(shared_data):
    """A longer stream, brute force with `rouge_l_f` (itself checked against rouge_score above)."""
    kept, removed = walk(stream_from(shared_data, 500), 0.7)
    assert removed > 100 and kept > 400
