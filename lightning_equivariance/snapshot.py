"""The side-effect guard of a measurement during training: what it could disturb, captured and put back.

:class:`Snapshot` captures the global RNG states, the train/eval mode of every submodule and
the values of parameters and buffers before a measurement and restores them after it;
:func:`rngs_restored` and :func:`seed_rngs` let a block (reading probe images through random
transforms) draw from seeded global RNGs without moving the caller's stream.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, List

import numpy as np
import torch
from torch import nn

__all__ = ["Snapshot", "rngs_restored", "seed_rngs"]


class Snapshot:
    """Everything a measurement could disturb, captured before it and restored after it.

    RNG states (Python ``random``, NumPy, torch CPU and - if initialised - CUDA), the
    train/eval mode of every submodule, whether grad is enabled, and parameters and buffers:
    their values are cloned and copied back if their version counter moved (the engine runs
    in eval mode under ``no_grad``, so normally nothing moves; the copy-back is a guarantee,
    not a path taken).
    """

    def __init__(self, module: nn.Module):
        self.py = random.getstate()
        self.np = np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self.modes = [(m, m.training) for m in module.modules()]
        self.grad = torch.is_grad_enabled()
        with torch.no_grad():
            self.tensors = [
                (t, t._version, t.detach().clone())
                for t in list(module.parameters()) + list(module.buffers())
            ]

    def restore(self) -> List[str]:
        """Restore everything; returns descriptions of the tensors that had to be copied back."""
        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        for m, mode in self.modes:
            m.training = mode
        torch.set_grad_enabled(self.grad)
        changed = []
        with torch.no_grad():
            for t, version, copy in self.tensors:
                if t._version != version:
                    changed.append(f"{tuple(t.shape)} {t.dtype}")
                    t.copy_(copy)
        self.tensors = []
        return changed


@contextmanager
def rngs_restored() -> Iterator[None]:
    """Put the Python, NumPy and torch CPU RNG states back after the block."""
    py, npst, tst = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(tst)


def seed_rngs(seed: int) -> None:
    """Seed the Python, NumPy and torch CPU RNGs (use inside :func:`rngs_restored`)."""
    # torch.default_generator only: torch.manual_seed would also seed (or queue a seed for)
    # CUDA, which the probe images' CPU transforms never use.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
