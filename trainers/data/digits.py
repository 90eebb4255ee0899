"""scikit-learn's 8x8 digits (1,797 images, shipped with sklearn) and continual task splits."""

from __future__ import annotations

import functools

import numpy as np

HELDOUT_EVERY = 5  # every 5th image (by index) is held out: 360 test images


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def digits_split(
    split: str, classes: list[int] | None = None, permute_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    x, y = _digits()
    idx = np.arange(len(y))
    keep = (idx % HELDOUT_EVERY == 0) if split == "heldout" else (idx % HELDOUT_EVERY != 0)
    if classes is not None:
        keep &= np.isin(y, classes)
    x, y = x[keep], y[keep]
    if permute_seed is not None:
        x = x[:, pixel_permutation(permute_seed)]
    return x, y


def pixel_permutation(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(64)


def class_incremental_tasks(n_tasks: int = 5) -> list[list[int]]:
    """Split the ten classes into n_tasks consecutive groups: 5 -> [[0,1],[2,3],...]."""
    return [a.tolist() for a in np.array_split(np.arange(10), n_tasks)]


def permuted_tasks(n_tasks: int) -> list[int | None]:
    """permute_seed per task; task 0 is the original image (no permutation)."""
    return [None] + list(range(1, n_tasks))
