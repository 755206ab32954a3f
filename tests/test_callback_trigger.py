"""``MeasureTrigger``: the callback's decision whether to measure now, told the trainer's moments one by one."""
import pytest

from lightning_equivariance.callback_args import (
    FIT_END,
    FIT_START,
    TRAIN_BATCH_END,
    TRAIN_EPOCH_END,
    TRAIN_EPOCH_START,
    VALIDATE_END,
    VALIDATION_EPOCH_END,
    MeasureTrigger,
)
from lightning_equivariance.run_log import History


def _trigger(history=None, **kw):
    options = dict(every_n_train_steps=None, every_n_epochs=1, stage="validation", measure_on_fit_start=False,
                   measure_on_fit_end=True, measure_on_validate=False)
    return MeasureTrigger(**{**options, **kw}, history=history or History())


def _epoch(trigger, epoch, steps, first_step):
    """One training epoch of ``steps`` batches from ``first_step`` (one optimizer step each), then validation."""
    decided = []
    trigger.decide(TRAIN_EPOCH_START, first_step, epoch)
    for b in range(steps):
        step = first_step + b + 1
        d = trigger.decide(TRAIN_BATCH_END, step, epoch, last_batch=b + 1 == steps)
        decided.append(("batch", step, d))
        if d is not None and d.measure:
            trigger.history.add(step, d.epoch, {"x": float(step)})
    d = trigger.decide(VALIDATION_EPOCH_END, first_step + steps, epoch)
    decided.append(("validation", first_step + steps, d))
    if d is not None and d.measure:
        trigger.history.add(first_step + steps, d.epoch, {"x": 1.0})
    trigger.decide(TRAIN_EPOCH_END, first_step + steps, epoch)
    return [(where, step, d.epoch, d.measure) for where, step, d in decided if d is not None]


def test_epoch_ends_and_the_end_of_fit():
    t = _trigger()
    assert t.decide(FIT_START, 0, 0) is None
    assert t.decide(VALIDATION_EPOCH_END, 0, 0, sanity_check=True) is None  # never the sanity check
    assert _epoch(t, 0, 3, 0) == [("validation", 3, 0, True)]
    assert _epoch(t, 1, 3, 3) == [("validation", 6, 1, True)]
    assert t.decide(FIT_END, 6, 2) is None  # the last step was measured


def test_the_end_of_fit_records_the_epoch_of_the_last_step():
    t = _trigger(every_n_epochs=5)
    assert _epoch(t, 0, 3, 0) == [] and _epoch(t, 1, 3, 3) == []
    d = t.decide(FIT_END, 6, 2)  # trainer.current_epoch is one past the last epoch
    assert d.measure and d.epoch == 1
    assert t.decide(FIT_END, 6, 2) is None  # decided once


def test_steps_and_gradient_accumulation():
    t = _trigger(every_n_train_steps=2, every_n_epochs=None, measure_on_fit_start=True)
    d = t.decide(FIT_START, 0, 0)
    assert d.measure and d.epoch == 0
    assert t.decide(TRAIN_BATCH_END, 2, 0).measure
    assert t.decide(TRAIN_BATCH_END, 2, 0) is None  # a second batch ending at the same optimizer step
    assert t.decide(TRAIN_BATCH_END, 3, 0) is None
    assert t.decide(VALIDATION_EPOCH_END, 3, 0) is None  # every_n_epochs=None


def test_edges_of_steps_sanity_checks_and_a_fit_stopped_mid_epoch():
    t = _trigger(every_n_train_steps=2, every_n_epochs=None)
    # batches that end while gradients accumulate, before the first optimizer step: global step 0, not a multiple
    assert t.decide(TRAIN_BATCH_END, 0, 0) is None
    # the sanity check is never measured, also when validation runs every N steps
    assert _trigger().decide(VALIDATION_EPOCH_END, 0, 0, sanity_check=True, validation_by_steps=True) is None
    # max_steps stops the fit inside epoch 1: trainer.current_epoch is still 1, and so is the last step's epoch
    t = _trigger(every_n_epochs=5)
    assert _epoch(t, 0, 3, 0) == []
    t.decide(TRAIN_EPOCH_START, 3, 1)
    assert t.decide(TRAIN_BATCH_END, 4, 1, last_batch=False) is None
    d = t.decide(FIT_END, 4, 1)
    assert d.measure and d.epoch == 1


def test_mid_epoch_validation_is_not_an_epoch_end():
    t = _trigger()
    t.decide(TRAIN_EPOCH_START, 0, 0)
    t.decide(TRAIN_BATCH_END, 1, 0, last_batch=False)
    assert t.decide(VALIDATION_EPOCH_END, 1, 0) is None
    assert t.decide(VALIDATION_EPOCH_END, 1, 0, validation_by_steps=True).measure  # check_val_every_n_epoch=None
    t.decide(TRAIN_BATCH_END, 2, 0, last_batch=True)
    assert t.decide(VALIDATION_EPOCH_END, 2, 0).measure
    t.decide(TRAIN_EPOCH_START, 2, 1)
    assert t.decide(VALIDATION_EPOCH_END, 2, 1) is None  # a new epoch has not ended


def test_stage_train_measures_at_the_train_epoch_end():
    t = _trigger(stage="train", every_n_epochs=2)
    assert t.decide(VALIDATION_EPOCH_END, 4, 1, validation_by_steps=True) is None
    assert t.decide(TRAIN_EPOCH_END, 2, 0) is None
    assert t.decide(TRAIN_EPOCH_END, 4, 1).measure


def test_a_measured_step_or_a_previous_versions_epoch_is_replayed():
    history = History()
    history.add(4, 0, {"a": 1.0})
    history.legacy = {1: {"a": 2.0}}
    t = _trigger(history=history, measure_on_validate=True)
    t.epoch_done = True
    d = t.decide(VALIDATION_EPOCH_END, 4, 0)
    assert not d.measure and d.scalars == {"a": 1.0}
    d = t.decide(VALIDATION_EPOCH_END, 9, 1)
    assert not d.measure and d.scalars == {"a": 2.0}
    assert not t.decide(VALIDATE_END, 4, 0).measure
    assert t.decide(VALIDATE_END, 5, 0).measure
    assert _trigger().decide(VALIDATE_END, 5, 0) is None  # measure_on_validate=False


def test_an_unknown_moment_is_an_error():
    with pytest.raises(ValueError, match="unknown moment 'epoch_end'"):
        _trigger().decide("epoch_end", 0, 0)
