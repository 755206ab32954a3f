"""The side-effect guard of a measurement during training: what it could disturb, captured and put back.

:class:`Snapshot` captures the train/eval mode of every submodule, its buffers and the binding
and version of its parameters before a measurement and restores them after it;
:func:`rngs_restored` and :func:`seed_rngs` let a block (reading probe images through random
transforms) draw from seeded global RNGs without moving the caller's stream, and
:func:`owned_rngs_restored` puts back the generators a dataset or its transforms own.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .layers import capture_modes, restore_modes

__all__ = ["Snapshot", "owned_generators", "owned_rngs_restored", "rngs_restored", "seed_rngs"]


class Snapshot:
    """What a measurement could disturb in a module, captured before it and put back after it.

    - the train/eval mode of every submodule, put back through ``train(mode)``
      (:func:`~lightning_equivariance.layers.restore_modes`: modules such as e2cnn's ``R2Conv``
      register or drop buffers there), and whether grad is enabled;
    - buffers, by owner and name: a buffer re-bound in ``forward`` (``self.ema = 0.9 * self.ema + x``)
      gets its former tensor back, a buffer written in place its former value (buffers are
      small: their values are copied), a buffer registered during the measurement is dropped;
    - parameters, by owner and name, *without copies* (a large model on a GPU must not need
      twice its memory): a re-bound parameter gets its former tensor back; one written in place
      (its version counter moved) cannot be put back and is named by :meth:`restore`.

    RNG states are not its job: the callback wraps the measurement in :func:`rngs_restored`.
    """

    def __init__(self, module: nn.Module):
        self.modes = capture_modes(module)
        self.grad = torch.is_grad_enabled()
        named = list(module.named_modules(remove_duplicate=False))
        with torch.no_grad():
            self.buffers = {
                id(m): (
                    m,
                    {
                        name: (t, t._version, None if t is None else t.detach().clone())
                        for name, t in m._buffers.items()
                    },
                )
                for _, m in named
            }
        self.parameters = [
            (f"{prefix}.{name}" if prefix else name, m, name, p, None if p is None else p._version)
            for prefix, m in named
            for name, p in m._parameters.items()
        ]

    def restore(self) -> List[str]:
        """Put everything back; returns the qualified names of parameters written in place (not restorable)."""
        restore_modes(self.modes)
        torch.set_grad_enabled(self.grad)
        with torch.no_grad():
            for m, saved in self.buffers.values():
                for name in [n for n in m._buffers if n not in saved]:
                    del m._buffers[name]  # registered during the measurement
                for name, (t, version, copy) in saved.items():
                    if m._buffers.get(name) is not t:
                        m._buffers[name] = t  # re-bound in forward
                    if t is not None and t._version != version:
                        t.copy_(copy)
        written = []
        for qualified, m, name, p, version in self.parameters:
            if m._parameters.get(name) is not p:
                m._parameters[name] = p
            if p is not None and p._version != version:
                written.append(qualified)
        self.buffers, self.parameters = {}, []
        return sorted(set(written))


def _rng_handles(obj) -> Optional[Tuple[Callable[[], Any], Callable[[Any], None]]]:
    """(get state, set state) of a random generator object, ``None`` for anything else."""
    if isinstance(obj, torch.Generator):
        return obj.get_state, obj.set_state
    if isinstance(obj, np.random.Generator):
        bits = obj.bit_generator
        return (lambda: bits.state), (lambda state: setattr(bits, "state", state))
    if isinstance(obj, np.random.RandomState):
        return obj.get_state, obj.set_state
    if isinstance(obj, random.Random):
        return obj.getstate, obj.setstate
    return None


def owned_generators(root, max_depth: int = 8, max_items: int = 256) -> List[Any]:
    """The random generators reachable from ``root`` (a dataset, a loader, a transform): attributes,
    list/tuple/dict items and their attributes, through wrappers such as ``Subset``,
    ``ConcatDataset`` and ``Compose``; containers longer than ``max_items`` (data) are not entered."""
    found, seen, stack = [], set(), [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, torch.Tensor, np.ndarray)):
            continue
        seen.add(id(obj))
        if _rng_handles(obj) is not None:
            found.append(obj)
            continue
        if depth >= max_depth:
            continue
        if isinstance(obj, Mapping):
            children = list(obj.values()) if len(obj) <= max_items else []
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj) if len(obj) <= max_items else []
        else:
            state = getattr(obj, "__dict__", None)
            children = list(state.values()) if isinstance(state, dict) else []
        stack.extend((child, depth + 1) for child in children)
    return found


@contextmanager
def owned_rngs_restored(*roots) -> Iterator[None]:
    """Put the state of every random generator a dataset owns (:func:`owned_generators`) back
    after the block: reading probe images through a dataset that draws its augmentation from
    its own generator must not change what training draws from it."""
    handles = [_rng_handles(g) for root in roots for g in owned_generators(root)]
    states = [get() for get, _ in handles]
    try:
        yield
    finally:
        for (_, set_state), state in zip(handles, states):
            set_state(state)


@contextmanager
def rngs_restored(cuda: bool = False) -> Iterator[None]:
    """Put the Python, NumPy and torch CPU RNG states (and with ``cuda``, every initialised CUDA
    device's) back after the block, also when it raises (``KeyboardInterrupt`` included: Lightning's
    ``isolate_rng`` restores only after a normal exit)."""
    py, npst, tst = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_in_use = cuda and torch.cuda.is_available() and torch.cuda.is_initialized()
    cuda_states = torch.cuda.get_rng_state_all() if cuda_in_use else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(tst)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def seed_rngs(seed: int) -> None:
    """Seed the Python, NumPy and torch CPU RNGs (use inside :func:`rngs_restored`)."""
    # torch.default_generator only: torch.manual_seed would also seed (or queue a seed for)
    # CUDA, which the probe images' CPU transforms never use.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
