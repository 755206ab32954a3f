"""Probe images: the input rule of a batch, reading a tensor, a Dataset or batches in chunks,
and :class:`ProbeSet`, the fixed seeded probe set the callback measures at every epoch.

The one place for the "first tensor" rule: the input of a batch is the batch itself if it
is a tensor, ``batch["image"]`` (or ``"images"``, ``"input"``, ``"inputs"``, ``"x"``,
``"pixel_values"``) for a dict, or the first tensor of a tuple/list.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from .snapshot import owned_rngs_restored, rngs_restored, seed_rngs

__all__ = [
    "shard", "first_tensor_of", "iter_images", "is_dataset", "INPUT_RULE", "ProbeSet", "check_inputs", "dataset_of",
    "item_seed",
]

INPUT_RULE = (
    "a batch's input is the batch itself if it is a tensor, batch['image'] (or 'images', 'input', "
    "'inputs', 'x', 'pixel_values') for a dict, the first tensor of a tuple/list, or input_fn(batch)"
)


def is_dataset(obj) -> bool:
    """A map-style dataset: indexable with a length (not a tensor, list or tuple)."""
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, (torch.Tensor, list, tuple))


def first_tensor_of(batch) -> torch.Tensor:
    """The input tensor of a batch, by the input rule (module docstring)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in ("image", "images", "input", "inputs", "x", "pixel_values"):
            if key in batch and isinstance(batch[key], torch.Tensor):
                return batch[key]
    if isinstance(batch, (tuple, list)):
        for b in batch:
            if isinstance(b, torch.Tensor):
                return b
    raise TypeError(
        f"cannot find the input tensor in a batch of type {type(batch).__name__}; pass a tensor, "
        "a (x, y) tuple or a dict with key 'image' (or give the callback input_fn=...)"
    )


def iter_images(inputs, chunk: int) -> Iterator[torch.Tensor]:
    """Yield ``chunk``-sized image tensors from a tensor, a Dataset, or an iterable of batches."""
    if isinstance(inputs, torch.Tensor):
        for i in range(0, inputs.shape[0], chunk):
            yield inputs[i : i + chunk]
        return
    if is_dataset(inputs):
        items = (first_tensor_of(inputs[i]) for i in range(len(inputs)))  # a map-style Dataset
        batches = (t.unsqueeze(0) for t in items)
    else:
        batches = (first_tensor_of(b) for b in inputs)
    buf: List[torch.Tensor] = []
    n = 0
    for b in batches:
        buf.append(b)
        n += b.shape[0]
        while n >= chunk:
            cat = torch.cat(buf)
            yield cat[:chunk]
            buf, n = ([cat[chunk:]] if cat.shape[0] > chunk else []), cat.shape[0] - chunk
    if n:
        yield torch.cat(buf)


def check_inputs(inputs) -> None:
    """Refuse what cannot be a probe source (``TypeError``/``ValueError`` naming ``inputs``)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 4 or not inputs.is_floating_point():
            raise ValueError(
                f"inputs must be a float tensor N x C x H x W, got {inputs.dtype} of shape {tuple(inputs.shape)}"
            )
        if inputs.shape[0] == 0:
            raise ValueError("inputs is empty (0 images)")
    elif not (is_dataset(inputs) or hasattr(inputs, "dataset")):
        raise TypeError(
            f"inputs must be a tensor N x C x H x W, a map-style Dataset or a DataLoader, got {type(inputs).__name__}"
        )


def dataset_of(source):
    """What a probe source is indexed by: the tensor or map-style Dataset itself, a loader's
    map-style dataset, or ``None`` for an iterable (a loader over an ``IterableDataset``)."""
    if isinstance(source, torch.Tensor) or is_dataset(source):
        return source
    dataset = getattr(source, "dataset", None)
    if dataset is not None and is_dataset(dataset) and not isinstance(dataset, torch.utils.data.IterableDataset):
        return dataset
    return None


def first_loader(loaders):
    """The first of a trainer's dataloaders (one, a list or a mapping of them), ``None`` if none."""
    if isinstance(loaders, Mapping):
        return next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


def item_seed(seed: int, index: int) -> int:
    """The global RNGs' seed for reading dataset item ``index``: one per (seed, index), so a random
    transform draws the same for an image on any rank, in any shard, at any epoch."""
    return (seed * 1_000_003 + index) % 2**31


def shard(total: int, rank: int, world: int) -> range:
    """Process ``rank``'s contiguous share of ``total`` probe positions: whole pairs ``2k, 2k + 1``,
    dealt out as evenly as possible, the first ranks taking one pair more."""
    pairs = (total + 1) // 2
    base, extra = divmod(pairs, world)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return range(2 * start, min(2 * stop, total))


class ProbeSet:
    """A fixed, seeded probe set: which images, this process's share of them, and reading it.

    Choice: ``num_samples`` items chosen once with a seeded ``torch.Generator`` (never the
    global RNG), a sorted random subset of the source's indices (``indices``, kept in
    :meth:`state_dict`; chosen anew only when the source's length changes). A source is a
    tensor ``N x C x H x W``, a map-style ``Dataset`` or a ``DataLoader``; a loader over an
    ``IterableDataset`` (no ``len``) gives its first ``num_samples`` images instead.

    Sharding: process ``rank`` of ``world`` reads a contiguous run of probe positions that
    starts at an even position (:meth:`positions`; a position is a rank in ``indices``), the
    pairs ``2k, 2k + 1`` dealt out as evenly as possible, so that no chance-level pair
    (docs/measures.md §7) is split between processes.

    Reading: dataset items are read directly (not through a loader's sampler or workers) and
    collated with the loader's ``collate_fn``; each is read with the global RNGs seeded from
    ``(seed, index)`` (:func:`item_seed`) and restored afterwards, so random augmentations draw
    the same for an image at every epoch and on every rank, and the caller's RNG stream is
    untouched, as is the state of every generator the dataset or its transforms own
    (:func:`~lightning_equivariance.snapshot.owned_rngs_restored`). The input of a batch follows
    the input rule (module docstring) or ``input_fn``.
    This process's images are cached on CPU.

    ``owner`` prefixes the warnings (a new choice after a checkpoint, a checkpoint chosen with
    other settings).
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        input_fn: Optional[Callable[[Any], torch.Tensor]] = None,
        owner: str = "ProbeSet",
    ):
        self.num_samples, self.seed, self.input_fn, self.owner = int(num_samples), int(seed), input_fn, owner
        self.indices: Optional[torch.Tensor] = None  # global probe indices into the source
        self.source_len: Optional[int] = None
        self._cache: Optional[torch.Tensor] = None  # this process's probe images, CPU
        self._cache_key: Optional[Tuple[int, int]] = None

    def state_dict(self) -> Dict[str, Any]:
        return {
            "indices": None if self.indices is None else self.indices.clone(),
            "source_len": self.source_len,
            "seed": self.seed,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the checkpoint's indices (warning when they were chosen with another seed or size)."""
        other_seed = int(state.get("seed", self.seed)) != self.seed
        if other_seed or int(state.get("num_samples", self.num_samples)) != self.num_samples:
            warnings.warn(
                f"{self.owner}: the checkpoint's probe set was chosen with seed={state.get('seed')}, "
                f"num_samples={state.get('num_samples')}; keeping it (this one has seed={self.seed}, "
                f"num_samples={self.num_samples})",
                UserWarning,
                stacklevel=3,
            )
        idx = state.get("indices")
        self.indices = None if idx is None else torch.as_tensor(idx, dtype=torch.long).clone()
        self.source_len = state.get("source_len")
        self._cache = self._cache_key = None

    def choose(self, length: Optional[int]) -> None:
        """Choose the indices for a source of ``length`` items (``None``: an iterable, nothing to choose)."""
        if length is None or (self.indices is not None and self.source_len == length):
            return
        if self.indices is not None:
            warnings.warn(
                f"{self.owner}: the probe source has {length} items, the checkpoint's probe set was chosen "
                f"from {self.source_len}; choosing a new one",
                RuntimeWarning,
                stacklevel=3,
            )
        if length < 1:
            raise ValueError("the probe source is empty")
        generator = torch.Generator().manual_seed(self.seed)
        self.indices = torch.randperm(length, generator=generator)[: min(self.num_samples, length)].sort().values
        self.source_len = length
        self._cache = self._cache_key = None

    def cached(self, rank: int = 0, world: int = 1) -> Optional[torch.Tensor]:
        """This process's images if already read for this (rank, world), else ``None``."""
        return self._cache if self._cache is not None and self._cache_key == (rank, world) else None

    def positions(self, rank: int = 0, world: int = 1) -> range:
        """The probe positions (ranks in ``indices``) of process ``rank``'s shard, in its order."""
        return shard(len(self.indices), rank, world)

    def images(self, source, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Process ``rank``'s share of the probe images from ``source``, a float tensor B x C x H x W on CPU."""
        cached = self.cached(rank, world)
        if cached is not None:
            return cached
        data = dataset_of(source)
        if data is None:  # an iterable: its first num_samples images
            images = self._read_iterable(source)
            self._check_split(images.shape[0], world)
            self.indices, self.source_len = torch.arange(images.shape[0]), None
            mine = shard(images.shape[0], rank, world)
            images = images[mine.start : mine.stop]
        else:
            self.choose(len(data))
            self._check_split(len(self.indices), world)
            mine = shard(len(self.indices), rank, world)
            chosen = self.indices[mine.start : mine.stop]
            if isinstance(data, torch.Tensor):
                images = data[chosen]
            else:
                collate_fn = getattr(source, "collate_fn", None) if source is not data else None
                images = self._read_items(data, chosen.tolist(), collate_fn)
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                "probe images must be a float tensor B x C x H x W, "
                f"got {images.dtype} of shape {tuple(images.shape)}; "
                f"{INPUT_RULE}"
            )
        self._cache, self._cache_key = images.detach().cpu(), (rank, world)
        return self._cache

    @staticmethod
    def _check_split(total: int, world: int) -> None:
        if total < world or (total + 1) // 2 < world:
            raise ValueError(
                f"{total} probe images cannot be split over {world} processes (each needs a pair of images); "
                "raise num_samples"
            )

    def input_of(self, batch) -> torch.Tensor:
        """The input tensor of a (collated) batch: ``input_fn(batch)`` if given, else by the input rule."""
        x = self.input_fn(batch) if self.input_fn is not None else first_tensor_of(batch)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input_fn returned {type(x).__name__}, expected a tensor B x C x H x W")
        return x

    def _read_items(self, dataset, indices: List[int], collate) -> torch.Tensor:
        from torch.utils.data import default_collate

        collate = collate or default_collate
        chunks, step = [], 64
        with rngs_restored(), owned_rngs_restored(dataset):
            for start in range(0, len(indices), step):
                items = []
                for i in indices[start : start + step]:
                    seed_rngs(item_seed(self.seed, i))
                    items.append(dataset[i])
                chunks.append(self.input_of(collate(items)).detach().cpu())
        return torch.cat(chunks)

    def _read_iterable(self, loader) -> torch.Tensor:
        chunks, n = [], 0
        with rngs_restored(), owned_rngs_restored(loader):
            seed_rngs(self.seed)
            for batch in loader:
                x = self.input_of(batch).detach().cpu()
                chunks.append(x)
                n += x.shape[0]
                if n >= self.num_samples:
                    break
        if not chunks:
            raise ValueError("the probe dataloader yielded no batch")
        return torch.cat(chunks)[: self.num_samples]
