"""Train the tiny CNN with ``strategy="ddp"`` on 2 CPU processes (gloo) with the callback.

Run by ``tests/test_callback_ddp.py`` in a subprocess (Lightning's script launcher re-runs
this file for rank 1; inside pytest it would re-run the test file)::

    python tests/ddp_script.py OUT_DIR [--devices 2] [--num-samples 37] [--epochs 2]

Each rank writes ``OUT_DIR/rank{r}.pt``: the callback's history and probe indices, and
(rank 0) the model's state at every measured epoch, taken right after the measurement.
"""
import argparse
import copy
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402 - sys.path set first
import torch  # noqa: E402 - sys.path set first
from lightning.pytorch.loggers import CSVLogger  # noqa: E402 - sys.path set first

from callback_helpers import LitCNN  # noqa: E402 - sys.path set first
from lightning_equivariance import EquivarianceCallback  # noqa: E402 - sys.path set first


class SaveStates(pl.Callback):
    """Keeps the state measured at each epoch (runs after the EquivarianceCallback)."""

    def __init__(self):
        self.states = {}

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.states[trainer.current_epoch] = copy.deepcopy(pl_module.state_dict())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=37)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(1)
    pl.seed_everything(0)
    model = LitCNN(n_train=64, n_val=50, batch_size=8)
    callback = EquivarianceCallback(num_samples=args.num_samples, per_channel=True, seed=3)
    saver = SaveStates()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        callbacks=[callback, saver],
        logger=CSVLogger(args.out, name="csv", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
    )
    trainer.fit(model)
    rank = trainer.global_rank
    torch.save(
        {
            "history": callback.history,
            "indices": callback.state_dict()["indices"],
            "states": saver.states,
            "world_size": trainer.world_size,
            "callback_metrics": {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("equivariance/")
            },
        },
        os.path.join(args.out, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main()
