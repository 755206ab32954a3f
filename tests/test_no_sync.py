"""No host synchronisation while chunks are measured (issue 16): set-up before the first chunk and the
final compute may read values on the host; the hot loop may not (it would stall a GPU)."""
import pytest
import torch

from host_sync import NoHostRead
from lightning_equivariance import Measurement, Rotation90, Translation
from lightning_equivariance.metrics import MEASURES
from models import SmallCNN

STACKED = sorted(m for m, cls in MEASURES.items() if cls.pass_kind == "stacked")


@pytest.mark.parametrize("name", STACKED + ["lee"])
def test_measuring_a_chunk_does_not_synchronise(name):
    torch.manual_seed(0)
    groups = ("rotation", "translation_x") if name == "lee" else (Rotation90(), Translation(2))
    meas = Measurement(SmallCNN(), measures=(name,), groups=groups, batch_size=64)
    x = torch.rand(12, 1, 12, 12)
    x[3, 0, 2, 2] = float("nan")  # the non-finite masks are on the hot path too
    meas.update(x[:4])  # set-up: layouts, states, first-chunk checks
    with NoHostRead():
        meas.update(x[4:])
    report = meas.compute()  # compute may synchronise
    assert report.results and report.non_finite_inputs == [3]


def test_the_check_sees_a_synchronisation_in_the_hot_loop():
    class Syncing(SmallCNN):
        def forward(self, x):
            if float(x.sum()) > -1:  # a host read, as a value-dependent branch would be
                return super().forward(x)

    meas = Measurement(Syncing(), groups=(Rotation90(),))
    meas.update(torch.rand(2, 1, 12, 12))
    with pytest.raises(AssertionError, match="_local_scalar_dense"), NoHostRead():
        meas.update(torch.rand(2, 1, 12, 12))
