"""ProbeSet: seeded choice, contiguous shards of whole pairs, reading with the global RNGs untouched, state, sources."""
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lightning_equivariance.probe_set import ProbeSet, item_seed


def _numbered(n):
    """n images 1 x 2 x 2 whose pixels hold their index."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


class _Augmented(Dataset):
    """Item i is i plus noise drawn from the global torch, NumPy and Python RNGs."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        noise = float(torch.rand(())) + float(np.random.rand()) + random.random()
        return torch.full((1, 2, 2), float(i) + noise), i


class _Stream(IterableDataset):
    def __iter__(self):
        for i in range(100):
            yield torch.full((1, 2, 2), float(i))


def _rng_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _same_states(a, b):
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_the_same_seed_chooses_the_same_sorted_indices():
    a, b = ProbeSet(10, seed=7), ProbeSet(10, seed=7)
    torch.manual_seed(1)
    a.choose(40)
    torch.manual_seed(2)  # the global RNG plays no part
    b.choose(40)
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(7))[:10].sort().values
    assert torch.equal(a.indices, expected) and torch.equal(b.indices, expected)
    other = ProbeSet(10, seed=8)
    other.choose(40)
    assert not torch.equal(other.indices, expected)
    small = ProbeSet(10, seed=7)
    small.choose(4)  # fewer items than num_samples: all of them
    assert small.indices.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_cover_the_probe_set_and_match_their_positions(world):
    x = _numbered(50)
    full = ProbeSet(13, seed=3)
    everything = full.images(x)[:, 0, 0, 0].long().tolist()
    assert everything == full.indices.tolist()
    seen = []
    for rank in range(world):
        probes = ProbeSet(13, seed=3)
        shard = probes.images(x, rank, world)[:, 0, 0, 0].long().tolist()
        positions = list(probes.positions(rank, world))
        assert shard == [everything[p] for p in positions]  # the positions name the shard's images
        seen += shard
    assert sorted(seen) == everything and len(seen) == len(set(seen)) == 13


def test_reading_a_dataset_leaves_the_global_rngs_and_draws_per_item():
    dataset = _Augmented(30)
    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    before = _rng_states()
    probes = ProbeSet(8, seed=5)
    images = probes.images(DataLoader(dataset, batch_size=4, shuffle=True))
    assert _same_states(_rng_states(), before)
    # item i is read with the global RNGs seeded from (seed, i): the same whatever the global state ...
    torch.manual_seed(999)
    np.random.seed(998)
    again = ProbeSet(8, seed=5).images(dataset)
    assert torch.equal(again, images)
    # ... and in any shard
    assert torch.equal(ProbeSet(8, seed=5).images(dataset, 1, 3), images[4:6])  # contiguous pairs: 0-3, 4-5, 6-7
    i = int(probes.indices[0])
    torch.manual_seed(item_seed(5, i))
    random.seed(item_seed(5, i))
    np.random.seed(item_seed(5, i))
    assert torch.equal(images[0], dataset[i][0])


def test_state_dict_round_trip_and_a_new_choice_when_the_source_changes():
    probes = ProbeSet(6, seed=1)
    images = probes.images(_numbered(20))
    restored = ProbeSet(6, seed=1)
    restored.load_state_dict(probes.state_dict())
    assert torch.equal(restored.indices, probes.indices) and restored.source_len == 20
    assert torch.equal(restored.images(_numbered(20)), images)
    with pytest.warns(UserWarning, match="seed=1, num_samples=6; keeping it"):
        ProbeSet(6, seed=2).load_state_dict(probes.state_dict())
    with pytest.warns(RuntimeWarning, match="has 30 items.*chosen from 20; choosing a new one"):
        restored.choose(30)
    assert restored.source_len == 30 and restored.cached() is None


def test_cache_is_per_rank_and_world():
    probes = ProbeSet(6, seed=1)
    assert probes.cached() is None
    images = probes.images(_numbered(20))
    assert probes.cached() is images and probes.cached(0, 2) is None
    assert probes.images(torch.zeros(20, 1, 2, 2)) is images  # cached: the source is not read again


def test_loader_collate_fn_input_fn_and_an_iterable_dataset():
    x = _numbered(20)
    def halve(items):
        return {"pixels": torch.stack([t for t, _ in items]) / 2}
    loader = DataLoader(TensorDataset(x, torch.zeros(20)), batch_size=5, collate_fn=halve)
    probes = ProbeSet(6, seed=1, input_fn=lambda batch: batch["pixels"])
    assert torch.equal(probes.images(loader), x[probes.indices] / 2)

    stream = ProbeSet(7, seed=1)
    images = stream.images(DataLoader(_Stream(), batch_size=3))
    assert images[:, 0, 0, 0].tolist() == list(range(7)) and stream.indices.tolist() == list(range(7))
    assert stream.source_len is None


def test_refusals():
    with pytest.raises(ValueError, match="3 probe images cannot be split over 4 processes"):
        ProbeSet(3).images(_numbered(10), 0, 4)
    with pytest.raises(ValueError, match="the probe source is empty"):
        ProbeSet(3).images(torch.zeros(0, 1, 2, 2))
    with pytest.raises(ValueError, match="probe images must be a float tensor"):
        ProbeSet(3).images(torch.zeros(10, 2, 2))
    with pytest.raises(TypeError, match="input_fn returned list"):
        ProbeSet(3, input_fn=lambda batch: [batch]).images(TensorDataset(_numbered(10)))


def test_probe_set_and_snapshot_do_not_import_lightning():
    code = (
        "import sys, lightning_equivariance.probe_set, lightning_equivariance.snapshot; "
        "print(sorted(m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("total,world", [(13, 2), (37, 2), (10, 3), (4, 2), (9, 4)])
def test_shards_are_contiguous_whole_pairs_from_even_positions(total, world):
    from lightning_equivariance.probe_set import shard

    runs = [shard(total, rank, world) for rank in range(world)]
    assert [p for r in runs for p in r] == list(range(total))  # contiguous, in rank order, covering
    assert all(r.start % 2 == 0 and len(r) > 0 for r in runs)  # no pair split between processes
    pairs = [(len(r) + 1) // 2 for r in runs]
    assert max(pairs) - min(pairs) <= 1  # as even as whole pairs allow


def test_too_few_images_for_the_processes_is_named():
    with pytest.raises(ValueError, match="3 probe images cannot be split over 3 processes"):
        ProbeSet(3).images(_numbered(3), 0, 3)
