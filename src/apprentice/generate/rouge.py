"""ROUGE-L exactly as `rouge_score` computes it, and a fast exact near-duplicate index built on it.

Self-Instruct and Alpaca drop a new instruction when its ROUGE-L F-measure against any seed or kept instruction is
> 0.7. Stanford scored every candidate against every kept instruction (tens of µs per pair, hours for 52K). This index
gives the same numbers, bit for bit, much faster:

* an inverted index over (token, occurrence) features gives, for every stored instruction at once, the size of the
  multiset intersection with the query, an upper bound on the LCS; frequent features are kept as dense byte rows so
  the count is a handful of vector additions;
* the F-measure of that bound (the same float expression, which is monotone in the LCS) prunes every instruction
  that cannot exceed the threshold, or cannot beat the best score found so far;
* candidates are scored in bands of decreasing bound, so the best score found early prunes the rest;
* the survivors get a bit-parallel LCS (Allison-Dix / Hyyrö) on Python integers: a few are scored one by one, many
  at once in one integer where each candidate owns a lane of bits followed by a guard bit that swallows the carry,
  so one pass over the query's tokens computes every candidate's LCS.

Usage::

    index = RougeLIndex(threshold=0.7)
    match = index.query("Give three tips for staying healthy.")
    if match.score <= index.threshold:
        index.add("Give three tips for staying healthy.")

Run the tests with `python -m pytest tests/test_rouge.py -q`; the benchmark is `python bench/dedup.py`.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

import numpy as np

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")

# A feature found in this many instructions, and in this share of those stored so far, moves to a dense byte row:
# counting it then costs one vector addition instead of a scatter over a long posting list.
_DENSE_MIN_POSTINGS = 256
_DENSE_MIN_SHARE = 1 / 32
# Below this many candidate tokens, scoring them one by one in Python beats packing them into lanes with numpy.
_LANES_MIN_TOKENS = 400
# The search for the best score scores candidates in bands of decreasing bound (F-measure levels); once a band yields
# a score, one last band down to that score finishes the search.
_LEVELS = (0.5, 0.35, 0.2, 0.0)
# Bounds are compared in float32; this margin is far above its rounding error.
_MARGIN = 1e-5


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


def _f_measures(lcs: np.ndarray, target_len: int, prediction_lens: np.ndarray) -> np.ndarray:
    """`f_measure` over arrays (lcs > 0 everywhere): numpy's float64 operations round exactly like Python's."""
    precision = lcs / prediction_lens
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


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


@dataclass(frozen=True)
class Match:
    """The best ROUGE-L F-measure of a query against the index and the id of that instruction (None: no overlap)."""

    score: float
    index: int | None


class _Growable:
    """A numpy array that grows by doubling; `view` is the filled part."""

    def __init__(self, dtype: type) -> None:
        self._data = np.zeros(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: list[int]) -> None:
        end = self.size + len(values)
        if end > len(self._data):
            grown = np.zeros(max(end, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : end] = values
        self.size = end

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.size]


class RougeLIndex:
    """Instructions added so far, queried for the best ROUGE-L F-measure of a new one, exactly as rouge_score.

    The query plays rouge_score's `target` and the stored instruction its `prediction`, as in Stanford's
    `_score_lcs(new_instruction_tokens, kept_tokens)`. A near duplicate is a score strictly greater than `threshold`.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._docs: list[list[int]] = []
        # The same token ids, each instruction followed by a guard (-1) that becomes a lane separator.
        self._flat = _Growable(np.int32)
        self._starts = _Growable(np.int64)
        self._lengths = _Growable(np.int64)
        self._lengths_f32 = _Growable(np.float32)
        self._features: dict[tuple[int, int], int] = {}
        self._postings: list[array] = []
        self._dense_row: dict[int, int] = {}
        self._dense = np.zeros((16, 1024), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, text: str) -> int:
        """Store an instruction and return its id (0, 1, 2, ... in the order added)."""
        doc = len(self)
        ids = [self._vocab.setdefault(token, len(self._vocab)) for token in tokenize(text)]
        self._docs.append(ids)
        self._starts.extend([self._flat.size])
        self._lengths.extend([len(ids)])
        self._lengths_f32.extend([len(ids)])
        self._flat.extend(ids + [-1])
        if doc >= self._dense.shape[1]:
            grown = np.zeros((self._dense.shape[0], 2 * self._dense.shape[1]), dtype=np.uint8)
            grown[:, :doc] = self._dense[:, :doc]
            self._dense = grown
        for feature in self._feature_ids(ids, create=True):
            row = self._dense_row.get(feature)
            if row is not None:
                self._dense[row, doc] = 1
                continue
            postings = self._postings[feature]
            postings.append(doc)
            if len(postings) >= max(_DENSE_MIN_POSTINGS, doc * _DENSE_MIN_SHARE):
                self._make_dense(feature)
        return doc

    def query(self, text: str) -> Match:
        """The best F-measure of `text` against every stored instruction (ties: the lowest id).

        Always the exact maximum, near duplicates included: every instruction that could score above the threshold
        is scored in the first batch (on a 52K-instruction stream, 1.7 of them on average for a near duplicate), so
        stopping at the first score above the threshold would save nothing."""
        ids = [self._vocab.get(token, -1) for token in tokenize(text)]
        best = Match(0.0, None)
        if not ids or not self._docs:
            return best
        # ratio * 2 is the F-measure of the LCS bound, up to float32 rounding: cuts on it carry a margin, and every
        # candidate that passes is scored exactly, so the margin costs a few extra candidates, never a wrong answer.
        ratio = self._overlap(ids) / (self._lengths_f32.view + np.float32(len(ids)))
        pattern = _position_masks(ids)
        upper = np.inf
        for level in [self.threshold] + [t for t in _LEVELS if t < self.threshold]:
            final = best.index is not None
            lower = max((best.score if final else level) / 2 - _MARGIN, 0.0)
            in_band = ratio > lower if upper == np.inf else (ratio > lower) & (ratio <= upper)
            candidates = np.flatnonzero(in_band)
            if len(candidates):
                best = self._score(ids, pattern, candidates, best)
            # Done when this was the last band, or when everything below the band's bound scores less than best.
            if best.index is not None and (final or best.score / 2 - _MARGIN >= lower):
                return best
            upper = lower
        return best

    def _feature_ids(self, ids: list[int], create: bool) -> list[int]:
        """The (token, occurrence number) features of a token list: their overlap is the multiset intersection."""
        seen: dict[int, int] = {}
        features = []
        for token in ids:
            occurrence = seen.get(token, 0)
            seen[token] = occurrence + 1
            key = (token, occurrence)
            feature = self._features.get(key)
            if feature is None:
                if not create:
                    continue
                feature = self._features[key] = len(self._postings)
                self._postings.append(array("i"))
            features.append(feature)
        return features

    def _make_dense(self, feature: int) -> None:
        row = len(self._dense_row)
        if row >= self._dense.shape[0]:
            grown = np.zeros((2 * self._dense.shape[0], self._dense.shape[1]), dtype=np.uint8)
            grown[:row] = self._dense[:row]
            self._dense = grown
        self._dense[row, np.frombuffer(self._postings[feature], dtype=np.int32)] = 1
        self._dense_row[feature] = row
        self._postings[feature] = array("i")

    def _overlap(self, ids: list[int]) -> np.ndarray:
        """Multiset intersection size of the query with every stored instruction."""
        n = len(self)
        # The overlap is at most the query length, so bytes suffice for all but very long queries.
        overlap = np.zeros(n, dtype=np.uint8 if len(ids) < 256 else np.int32)
        sparse = array("i")
        for feature in self._feature_ids([t for t in ids if t >= 0], create=False):
            row = self._dense_row.get(feature)
            if row is None:
                sparse.extend(self._postings[feature])
            else:
                overlap += self._dense[row, :n]
        if sparse:
            np.add(overlap, np.bincount(np.frombuffer(sparse, dtype=np.int32), minlength=n), out=overlap,
                   casting="unsafe")
        return overlap

    def _score(self, ids: list[int], pattern: dict, candidates: np.ndarray, best: Match) -> Match:
        """Exact scores of the query against `candidates` (ascending ids); the better of those and `best`."""
        lengths = self._lengths.view[candidates]
        if lengths.sum() <= _LANES_MIN_TOKENS:
            ones = (1 << len(ids)) - 1
            lcs = np.array([(ones ^ _advance(ones, pattern, ones, self._docs[doc])).bit_count() for doc in candidates])
        else:
            lcs = self._lcs_lanes(ids, candidates, lengths)
        scores = np.zeros(len(candidates))
        hit = lcs > 0
        scores[hit] = _f_measures(lcs[hit], len(ids), lengths[hit])
        top = int(np.argmax(scores))
        score = float(scores[top])
        if score > best.score or (score == best.score and best.index is not None and candidates[top] < best.index):
            return Match(score, int(candidates[top]))
        return best

    def _lcs_lanes(self, ids: list[int], candidates: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """LCS of the query with many candidates at once: their tokens, guards included, form one bit string, and the
        query is fed to it once."""
        spans = lengths + 1
        lane_ends = np.cumsum(spans)
        total = int(lane_ends[-1])
        lane_starts = lane_ends - spans
        positions = np.repeat(self._starts.view[candidates] - lane_starts, spans) + np.arange(total)
        text = self._flat.view[positions]
        distinct = sorted({token for token in ids if token >= 0})
        rows = np.empty((len(distinct) + 1, total), dtype=bool)
        np.equal(text[None, :], np.array(distinct, dtype=np.int32)[:, None], out=rows[:-1])
        np.greater_equal(text, 0, out=rows[-1])
        packed = np.packbits(rows, axis=1, bitorder="little")
        width = packed.shape[1]
        raw = packed.tobytes()
        masks = [int.from_bytes(raw[i * width : (i + 1) * width], "little") for i in range(len(rows))]
        ones = masks.pop()
        v = _advance(ones, dict(zip(distinct, masks)), ones, ids)
        zeros = np.unpackbits(np.frombuffer((ones ^ v).to_bytes(width, "little"), dtype=np.uint8), bitorder="little")
        return np.add.reduceat(zeros[:total], lane_starts, dtype=np.int64)
