"""Deterministic streams, weighted mixtures and replay.

A `Stream` walks the rows of one source forever: epoch e visits them in the permutation
drawn from (seed, e) (or, in epoch 0, in curriculum order). Its only state is the count of
rows taken, so a checkpoint stores one integer per stream.

A `Mixture` builds each batch: the number of rows from each part is drawn from a
multinomial seeded by (seed, step), so the allocation is a pure function of the step and
the batch content a pure function of the step and the stream positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Stream:
    def __init__(self, n: int, seed: int, first_order: np.ndarray | None = None):
        if n <= 0:
            raise ValueError("a stream needs at least one row")
        self.n, self.seed, self.pos = n, seed, 0
        self.first_order = first_order
        self._epoch, self._perm = -1, np.arange(0)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            if epoch == 0 and self.first_order is not None:
                self._perm = self.first_order
            else:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        return self._perm

    def take(self, k: int) -> np.ndarray:
        """Indices of the next k rows."""
        out = np.empty(k, dtype=np.int64)
        for i in range(k):  # k is a batch share: tiny; epochs change rarely
            epoch, j = divmod(self.pos, self.n)
            out[i] = self._order(epoch)[j]
            self.pos += 1
        return out


@dataclass
class Part:
    name: str
    prob: float
    arrays: tuple[np.ndarray, ...]  # row-aligned arrays, e.g. (ids, labels) or (x, y)
    stream: Stream


class Mixture:
    def __init__(self, parts: list[Part], batch_size: int, seed: int):
        total = sum(p.prob for p in parts)
        self.parts = [p for p in parts if p.prob > 0]
        self.probs = np.array([p.prob / total for p in self.parts])
        self.batch_size, self.seed = batch_size, seed

    def counts(self, step: int) -> np.ndarray:
        return np.random.default_rng([self.seed, step]).multinomial(self.batch_size, self.probs)

    def batch(self, step: int) -> tuple[np.ndarray, ...]:
        cols: list[list[np.ndarray]] | None = None
        for part, k in zip(self.parts, self.counts(step), strict=True):
            if k == 0:
                continue
            idx = part.stream.take(int(k))
            rows = [a[idx] for a in part.arrays]
            cols = (
                [[r] for r in rows]
                if cols is None
                else [c + [r] for c, r in zip(cols, rows, strict=True)]
            )
        assert cols is not None
        return tuple(np.concatenate(c) for c in cols)

    def state(self) -> dict[str, int]:
        return {p.name: p.stream.pos for p in self.parts}

    def load_state(self, state: dict[str, int]) -> None:
        for p in self.parts:
            p.stream.pos = int(state.get(p.name, 0))


def curriculum_order(scores: np.ndarray) -> np.ndarray:
    """Easiest (lowest score) first; ties keep their original order."""
    return np.argsort(scores, kind="stable")
