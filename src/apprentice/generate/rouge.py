"""ROUGE-L exactly as `rouge_score` computes it, and a near-duplicate index whose work per query stays small.

Self-Instruct and Alpaca drop a new instruction when its ROUGE-L F-measure against any seed or kept instruction is
> 0.7. Stanford scored every candidate against every kept instruction (tens of µs per pair, hours for 52K). This index
takes the same decisions, bit for bit, while looking at only a few of the kept instructions per query: the prefix
filter of set-similarity joins (AllPairs, PPJoin; the two-feature version is AdaptJoin's l-prefix), derived for ROUGE-L.

* Tokens with multiplicity become a set: the j-th occurrence of a token is the feature (token, j). The LCS is at most
  the size of the multiset intersection, the number of shared features (the overlap).
* For a query of m tokens and a stored instruction of n, F <= 2 * overlap / (m + n), so F > t needs an overlap of at
  least k = ceil(t * (m + n) / 2), and lengths with 2 * min(m, n) / (m + n) <= t are out at once. Order all features
  rarest first; the s rarest shared features of such a pair then lie within the first m - k + s features of the
  query and the first n - k + s of the stored one (k - s shared features follow each). With s = 2 (s = 1 when k = 1),
  a pair that shares a common frame and one rare word is never a candidate.
* The index posts each stored instruction, grouped by length, under the features of the longest prefix any query can
  need (the least overlap F > t allows at its length, t * n / (2 - t)); a query probes only its own prefix for each
  compatible length and keeps what it finds s times. Both sides need one fixed order: it is the document frequency
  at the last rebuild (features first seen since then come first, by id), and the index rebuilds each time it
  doubles, so the order follows the data at a cost linear in its size overall.
* Inside a generate run other threads evict the index from the CPU caches between two queries, so the memory a
  query touches counts. So the posting lists are C arrays of ids (4 bytes each, read in order) and the
  stored token lists are tuples of ints, which the garbage collector stops tracking: a full collection late in a long
  run does not walk the index either. With a small vocabulary (a teacher that reuses a few thousand words) every
  token's posting list grows with the index however rarely it is ranked; the largest list a pair must be found in
  twice is then only checked against the union of the others.
* Candidates get their exact overlap (a set intersection) and are scored in decreasing order of the F-measure of
  that bound (the same float expression, so F <= bound holds for the rounded values too), stopping when no bound can
  beat the best score; survivors get a bit-parallel LCS (Allison-Dix / Hyyrö) on Python integers.

What `query` returns. Above the threshold the match is the exact best and its lowest id (every instruction that
scores above the threshold is a candidate). When nothing scores above it, the match is the best among the
candidates: a score the query really has against that instruction, at most the true best; Match(0.0, None) when
there is no candidate. Certifying the true best below the threshold means examining everything that could reach it,
down to instructions sharing a stop word: measured (docs/BENCHMARKS.md), that made the Zipf stream quadratic again
(exponent 2.07, 12.9 s for 8,000 items against 1.5 s), so the index does not do it.

Usage::

    index = RougeLIndex(threshold=0.7)
    match = index.query("Give three tips for staying healthy.")
    if match.score <= index.threshold:
        index.add("Give three tips for staying healthy.")

Run the tests with `python -m pytest tests/test_rouge.py -q`; the benchmark is `python bench/dedup.py`.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")

# Prefix lengths and length bounds come from real-number inequalities while decisions use rounded floats: the
# margin makes every prefix a little longer than needed (a few more candidates, never a missed one).
_MARGIN = 1e-9
# A feature id packs (token id, occurrence number): token + occurrence * _OCCURRENCE.
_OCCURRENCE = 1 << 32


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer (no stemming): lowercase, every run of non-[a-z0-9] is a separator."""
    return _NON_ALPHANUM.sub(" ", text.lower()).split()


def f_measure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge_score's `_score_lcs` F-measure from an LCS length, with its float expression and operand order."""
    if target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _position_masks(tokens: list) -> dict:
    """For each distinct token, the bit mask of its positions: the pattern side of a bit-parallel LCS."""
    masks: dict = {}
    for position, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def _advance(v: int, masks: dict, ones: int, sequence: list) -> int:
    """Allison-Dix / Hyyrö bit-parallel LCS: feed `sequence` to the state `v` (all ones at the start) of a pattern
    whose positions are the set bits of `ones`; the LCS is then the number of those bits cleared in `v`."""
    for token in sequence:
        match = masks.get(token)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & ones
    return v


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence, bit-parallel: O(len(a) * len(b) / word size)."""
    ones = (1 << len(a)) - 1
    return (ones ^ _advance(ones, _position_masks(a), ones, b)).bit_count()


def rouge_l_f(target_tokens: list[str], prediction_tokens: list[str]) -> float:
    """ROUGE-L F-measure of two token lists, equal to `rouge_scorer._score_lcs(target, prediction).fmeasure`."""
    return f_measure(lcs_length(target_tokens, prediction_tokens), len(target_tokens), len(prediction_tokens))


def _features(ids: list[int]) -> list[int]:
    """The (token, occurrence number) features of a token list, packed in ints: their overlap between two lists is
    the size of the multiset intersection."""
    seen: dict[int, int] = {}
    features = []
    for token in ids:
        occurrence = seen.get(token, 0)
        seen[token] = occurrence + 1
        features.append(token + occurrence * _OCCURRENCE)
    return features


def _found_twice(postings: list[array]) -> set[int]:
    """The ids in at least two of the posting lists (each holds an id at most once)."""
    if len(postings) < 2:
        return set()
    postings = sorted(postings, key=len)
    once: set[int] = set()
    twice: set[int] = set()
    for docs in postings[:-1]:
        twice.update(once.intersection(docs))
        once.update(docs)
    return twice | once.intersection(postings[-1])


def _shared(needed: int) -> int:
    """How many features a pair needing an overlap of `needed` must share within its prefixes."""
    return min(needed, 2)


def _probe_plan(m: int, longest: int, threshold: float) -> list[tuple[int, int, int]]:
    """What a query of m tokens probes, for each of its features (rarest first) that it probes at all: the stored
    lengths lo..hi to look at, and up to which of them one shared feature makes a candidate (two above).

    Both are ranges: lengths at which F > threshold is possible are contiguous, and the overlap k they need grows with
    n, so the query's prefix m - k + s shrinks."""
    level = threshold - _MARGIN
    # F <= 2 * min(m, n) / (m + n): lengths too far apart cannot reach the threshold.
    needs = [(n, max(1, math.ceil(level * (m + n) / 2))) for n in range(1, longest + 1)
             if 2 * min(m, n) / (m + n) >= level]
    plan = []
    for rank in range(m):
        allowed = [(n, needed) for n, needed in needs if rank < m - needed + _shared(needed)]
        if not allowed:
            break
        single = [n for n, needed in allowed if _shared(needed) == 1]
        plan.append((allowed[0][0], allowed[-1][0], single[-1] if single else 0))
    return plan


@dataclass(frozen=True)
class Match:
    """A ROUGE-L F-measure of a query against the index and the id of that instruction (None: no overlap)."""

    score: float
    index: int | None


class RougeLIndex:
    """Instructions added so far, queried for near duplicates of a new one, exactly as rouge_score scores them.

    The query plays rouge_score's `target` and the stored instruction its `prediction`, as in Stanford's
    `_score_lcs(new_instruction_tokens, kept_tokens)`. A near duplicate is a score strictly greater than `threshold`.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        # tuples of ints, which the garbage collector stops tracking: a full collection then skips the whole index
        self._docs: list[tuple[int, ...]] = []  # token ids
        self._doc_features: list[tuple[int, ...]] = []
        self._frequency: dict[int, int] = {}  # feature -> number of stored instructions that have it
        # The token order of the prefixes: rarest first by the frequencies at the last rebuild; features first seen
        # since then come before all others (rank -1), by id. Fixed between rebuilds, as both prefixes need.
        self._rank: dict[int, int] = {}
        self._rebuilt_at = 0
        # feature -> stored length -> ids of the stored instructions of that length with the feature in their prefix,
        # as C arrays: compact, read in order, and nothing for the garbage collector to walk
        self._postings: dict[int, dict[int, array]] = {}
        self._longest = 0  # tokens in the longest stored instruction
        self._plans: dict[int, tuple[int, list[tuple[int, int, int]]]] = {}  # m -> (self._longest, its probe plan)

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, text: str) -> int:
        """Store an instruction and return its id (0, 1, 2, ... in the order added)."""
        doc = len(self._docs)
        ids = [self._vocab.setdefault(token, len(self._vocab)) for token in tokenize(text)]
        features = _features(ids)
        self._docs.append(tuple(ids))
        self._doc_features.append(tuple(features))
        self._longest = max(self._longest, len(ids))
        for feature in features:
            self._frequency[feature] = self._frequency.get(feature, 0) + 1
        if doc + 1 >= max(64, 2 * self._rebuilt_at):
            self._rebuild()
        else:
            self._index(doc, features)
        return doc

    def query(self, text: str) -> Match:
        """The best F-measure of `text` against the candidates, the stored instructions that share one or two
        features with it within both prefixes (ties: the lowest id). Every instruction that scores above the
        threshold is a candidate, so the match is the exact best whenever it is above the threshold."""
        tokens = tokenize(text)
        if not tokens or not self._docs:
            return Match(0.0, None)
        unknown: dict[str, int] = {}  # tokens never stored: distinct negative ids, matching nothing
        ids = []
        for token in tokens:
            token_id = self._vocab.get(token)
            ids.append(unknown.setdefault(token, -1 - len(unknown)) if token_id is None else token_id)
        features = _features(ids)
        m = len(ids)
        cached = self._plans.get(m)
        if cached is None or cached[0] != self._longest:
            cached = self._plans[m] = (self._longest, _probe_plan(m, self._longest, self.threshold))
        postings = self._postings
        candidates: set[int] = set()
        twice: list[array] = []  # posting lists a candidate must be found in two of
        for feature, (lo, hi, single) in zip(self._ordered(features), cached[1]):
            by_length = postings.get(feature)
            if not by_length:
                continue
            # walk the shorter of the two: the feature's lengths or the range
            if len(by_length) <= hi - lo + 1:
                buckets = [(n, docs) for n, docs in by_length.items() if lo <= n <= hi]
            else:
                buckets = [(n, by_length[n]) for n in range(lo, hi + 1) if n in by_length]
            for n, docs in buckets:
                if n <= single:
                    candidates.update(docs)
                else:
                    twice.append(docs)
        candidates |= _found_twice(twice)
        return self._best(ids, frozenset(features), candidates)

    def _ordered(self, features: Sequence[int]) -> list[int]:
        rank = self._rank
        return sorted(features, key=lambda feature: (rank.get(feature, -1), feature))

    def _index(self, doc: int, features: Sequence[int]) -> None:
        """Post a stored instruction under the features of the longest prefix any query can need: for the least
        overlap F > t allows at its length, t * n / (2 - t) (a query of t * n / (2 - t) tokens, all shared)."""
        n = len(features)
        level = self.threshold - _MARGIN
        needed = max(1, math.ceil(level * n / (2 - level)))
        for feature in self._ordered(features)[: n - needed + _shared(needed)]:
            by_length = self._postings.setdefault(feature, {})
            docs = by_length.get(n)
            if docs is None:
                docs = by_length[n] = array("i")
            docs.append(doc)

    def _rebuild(self) -> None:
        """Re-rank the features by their frequencies now and post every stored instruction again: done each time
        the index doubles, so the order follows the data at a cost linear in its size overall."""
        ordered = sorted(self._frequency, key=lambda feature: (self._frequency[feature], feature))
        self._rank = {feature: rank for rank, feature in enumerate(ordered)}
        self._postings = {}
        for doc, features in enumerate(self._doc_features):
            self._index(doc, features)
        self._rebuilt_at = len(self._docs)

    def _best(self, ids: list[int], features: frozenset[int], candidates: set[int]) -> Match:
        """The best exact score among the candidates (ties: the lowest id), scored in decreasing order of their
        overlap bound until no bound can beat the best found."""
        m = len(ids)
        docs, doc_features = self._docs, self._doc_features
        bounded = [(-f_measure(len(features.intersection(doc_features[doc])), m, len(docs[doc])), doc)
                   for doc in candidates]
        bounded.sort()
        best_score, best_doc = 0.0, None
        ones = (1 << m) - 1
        pattern = _position_masks(ids)
        for negative_bound, doc in bounded:
            if -negative_bound < best_score:
                break
            if best_doc is not None and -negative_bound == best_score and doc > best_doc:
                continue
            tokens = docs[doc]
            score = f_measure((ones ^ _advance(ones, pattern, ones, tokens)).bit_count(), m, len(tokens))
            if score > best_score or (score == best_score and best_doc is not None and doc < best_doc):
                best_score, best_doc = score, doc
        return Match(best_score, best_doc)
