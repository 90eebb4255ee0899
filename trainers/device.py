"""Which device a stage trains on: ``$STAGEWISE_DEVICE`` = auto (default) | cpu | cuda[:N].

Workers are one process per device: give each its own ``CUDA_VISIBLE_DEVICES`` and leave
this on auto. CPU runs are bit-for-bit reproducible; CUDA runs are reproducible up to the
non-determinism of cuBLAS/cuDNN kernels.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "STAGEWISE_DEVICE"


def resolve_device(name: str | None = None) -> torch.device:
    name = (name or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{DEVICE_ENV}={name} but no CUDA device is visible to this process")
    return dev
