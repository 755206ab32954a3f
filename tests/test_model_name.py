"""The run's model name (issue 26): the measured network's class and parameter count.

Unless ``model_name=`` is given, the tab names a run's model after the network the
LightningModule wraps - its single child with parameters, as the layer names are relative to
it - with its parameter count; the LightningModule's own class only when several children hold
parameters (the tab used to say ``Lit``).
"""
import json

import lightning.pytorch as pl
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from callback_helpers import LitCNN, trainer_kwargs
from lightning_equivariance import EquivarianceCallback
from lightning_equivariance.layers import wrapped_child_prefix
from lightning_equivariance.run_log import model_display_name
from models import SmallCNN


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = SmallCNN()
        self.loss = nn.CrossEntropyLoss()  # no parameters: still one network


class TwoNets(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)


def test_the_single_child_with_parameters_names_the_model():
    wrapper = Wrapper()
    count = sum(p.numel() for p in wrapper.model.parameters())
    assert wrapped_child_prefix(wrapper) == "model."
    assert model_display_name(wrapper, "model.") == f"SmallCNN ({count:,} params)"
    assert count > 0


def test_several_children_with_parameters_name_the_module_itself():
    two = TwoNets()
    assert wrapped_child_prefix(two) == ""
    assert model_display_name(two, "") == "TwoNets (26 params)"  # 3*4+4 + 4*2+2


def test_a_fitted_run_is_named_by_its_network(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    pl.seed_everything(0, verbose=False)
    module = LitCNN()
    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    kw = trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=1)
    pl.Trainer(callbacks=[EquivarianceCallback(num_samples=8)], logger=logger, **kw).fit(module)
    acc = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"tensors": 0})
    acc.Reload()
    content = json.loads(acc.SummaryMetadata("equivariance_layers/equivariance/rotation90").plugin_data.content)
    count = sum(p.numel() for p in module.net.parameters())
    assert content["model"] == f"Sequential ({count:,} params)"
    assert "LitCNN" not in content["model"]
