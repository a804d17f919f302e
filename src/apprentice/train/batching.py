"""Token-budget batching: examples sorted by length and packed into batches whose padded size (examples x longest
example) stays within a token budget, so short examples travel in big batches and almost nothing is padding.

    plan = BatchPlan.build(lengths, token_budget=16384, seed=0)
    plan.batch(step)                      # example indices of the global batch for optimizer step `step`
    share(plan.batch(step), rank, world)  # this process's part of it

Every batch holds whole examples (no attention across examples). The batches are fixed; only their order changes
each epoch, seeded, so a step number alone says which examples it trains on: that is what makes resume exact and
lets N processes split the same global batch that one process would take.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


def padded(length: int, multiple: int) -> int:
    """Round up to a multiple (bucketing shapes for torch.compile and tensor cores)."""
    return -(-length // multiple) * multiple


def pack(indices: Sequence[int], lengths: Sequence[int], budget: int, multiple: int = 1) -> list[list[int]]:
    """Split `indices` into batches, longest first, each with len(batch) * padded longest length <= budget.

    An example longer than the budget travels alone (the caller keeps max_len <= budget to avoid that)."""
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in ordered:
        if batches and (len(batches[-1]) + 1) * padded(lengths[batches[-1][0]], multiple) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def share(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's part of a length-sorted global batch: every world-th example, so ranks get similar lengths."""
    return list(batch[rank::world])


@dataclass(frozen=True)
class BatchPlan:
    batches: tuple[tuple[int, ...], ...]
    seed: int

    @classmethod
    def build(cls, lengths: Sequence[int], token_budget: int, seed: int, multiple: int = 1) -> BatchPlan:
        batches = pack(range(len(lengths)), lengths, token_budget, multiple)
        return cls(tuple(tuple(b) for b in batches), seed)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def order(self, epoch: int) -> list[int]:
        """The shuffled batch order of one epoch; the same for every process and every rerun."""
        order = list(range(len(self.batches)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def batch(self, step: int) -> tuple[int, ...]:
        epoch, position = divmod(step, self.steps_per_epoch)
        return self.batches[self.order(epoch)[position]]
