"""--train_minutes: the plan made from the timed steps, the schedule that ends with it, and
a tiny run that trains for its budget and records it."""

import json
import re

import numpy as np
import pytest

from engine.budget import SKIPPED_STEPS, TIMED_STEPS, EpochPlan, TrainingBudget, stored_plan


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeModel:
    stop_training = False


def _budget(tmp_path, minutes=1.0, steps_per_epoch=5, initial_epoch=0):
    import tensorflow as tf

    clock, var, plan = FakeClock(), tf.Variable(10 ** 6, dtype=tf.int64), EpochPlan(10 ** 6)
    cb = TrainingBudget(minutes, steps_per_epoch, var, plan, tmp_path / "budget.json",
                        initial_epoch=initial_epoch, log=lambda m: None, clock=clock)
    cb.set_model(FakeModel())
    return cb, clock, var, plan


def _train(cb, clock, steps_per_epoch, step_seconds=lambda epoch: 1.0,
           after_epoch=lambda epoch: 0.0):
    """Drives the callback as model.fit would until it stops training: each step takes
    ``step_seconds(epoch)``, and ``after_epoch(epoch)`` seconds pass after each epoch's end
    (the other callbacks, the next iterator). Returns the epochs trained."""
    cb.on_train_begin()
    step, epoch = 0, 0
    while not cb.model.stop_training:
        cb.on_epoch_begin(epoch)
        for _ in range(steps_per_epoch):
            clock.now += step_seconds(epoch)
            cb.on_train_batch_end(step)
            step += 1
        cb.on_epoch_end(epoch)
        clock.now += after_epoch(epoch)
        epoch += 1
    return epoch


def test_the_plan_fills_the_budget_at_the_timed_step_rate(tmp_path):
    """Slow first steps (tracing) are left out of the rate; the steps that fit into what is
    left of the budget are rounded down to whole epochs; the schedule, the plan and the
    record follow; training stops after the planned epoch."""
    cb, clock, var, plan = _budget(tmp_path)
    cb.on_train_begin()
    step = 0
    for epoch in range(9):
        cb.on_epoch_begin(epoch)
        for _ in range(5):
            clock.now += 5.0 if step < SKIPPED_STEPS else 1.0
            cb.on_train_batch_end(step)
            step += 1
            if step == SKIPPED_STEPS + TIMED_STEPS:
                # 13 steps took 15 + 10 = 25 s; 35 s left at 1 s/step -> 48 steps -> 9 epochs
                assert plan.epochs == 9 and int(var.numpy()) == 9
                record = stored_plan(tmp_path / "budget.json")
                assert record["planned_epochs"] == 9 and record["planned_steps"] == 45
                assert record["step_seconds"] == pytest.approx(1.0)
        cb.on_epoch_end(epoch)
        assert cb.model.stop_training == (epoch == 8)
    assert plan.epochs == 9  # epochs of exactly their steps' time leave the plan as it was


def test_time_outside_the_steps_shortens_the_plan_early_on(tmp_path):
    """Each epoch also spends 4 s in its callbacks: the epochs measured in the first
    quarter of the plan refine it to the epochs of that length that fit."""
    cb, clock, var, plan = _budget(tmp_path, minutes=2.0, steps_per_epoch=2)
    epoch = _train(cb, clock, 2, after_epoch=lambda e: 4.0)
    # planned from the steps: 120 s / 1 s = 60 steps = 30 epochs; at 6 s an epoch, 20 fit
    assert stored_plan(tmp_path / "budget.json")["epoch_seconds"] == pytest.approx(6.0)
    assert epoch == plan.epochs == int(var.numpy()) == 20
    assert clock.now <= 120.0


def test_a_budget_spent_during_the_warm_up_still_ends_the_current_epoch(tmp_path):
    cb, clock, var, plan = _budget(tmp_path, minutes=0.1, steps_per_epoch=20)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    for step in range(SKIPPED_STEPS + TIMED_STEPS):
        clock.now += 1.0
        cb.on_train_batch_end(step)
    # 13 steps, past the 6 s budget: the epoch under way is the last
    assert plan.epochs == 1


def test_a_resumed_run_counts_the_epochs_it_already_trained(tmp_path):
    cb, clock, var, plan = _budget(tmp_path, minutes=1.0, steps_per_epoch=20, initial_epoch=3)
    cb.on_train_begin()
    cb.on_epoch_begin(3)
    for step in range(SKIPPED_STEPS + TIMED_STEPS):
        clock.now += 1.0
        cb.on_train_batch_end(step)
    # 60 steps before + 13 now, 47 s left -> 120 steps -> 6 epochs of 20
    assert plan.epochs == 6


def test_the_schedule_reads_its_length_from_the_planned_epochs():
    import tensorflow as tf

    from engine.schedules import ReleaseSchedule

    epochs = tf.Variable(10 ** 6, dtype=tf.int64)
    schedule = ReleaseSchedule(0.1, "cos", steps_per_epoch=10, epochs=epochs)
    assert float(schedule(50)) == pytest.approx(0.1, rel=1e-4)  # the start of a long cosine
    epochs.assign(10)
    assert float(schedule(50)) == pytest.approx(0.05, rel=1e-4)  # halfway through 10 epochs
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    assert schedule.get_config()["epochs"] == 10


@pytest.mark.slow
def test_a_tiny_run_trains_for_its_budget_and_records_the_plan(tmp_path):
    """digitsood at width 0.125, epochs of 2 steps, for 0.2 minutes: the planned epochs are trained (the
    optimizer's steps are the plan's), summary.json records the budget, the learning rate
    follows the cosine over the planned epochs."""
    from tests.entry_point import TINY_RUN, run_in_process

    run = tmp_path / "run"
    flags = [f for f in TINY_RUN if not f.startswith("--num_epoch")]  # 2 steps an epoch
    out = run_in_process([f"--model_dir={run}", *flags, "--train_minutes=0.2",
                          "--learning_rate=0.1", "--detectors=kde", "--noexport"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "budget: 0.2 min" in out.stdout
    meta = json.loads((run / "stats" / "summary.json").read_text())["meta"]
    budget = meta["budget"]
    assert budget["planned_epochs"] == budget["epochs"] == meta["epochs"]
    assert meta["optimizer_steps"] == budget["planned_steps"] == \
        budget["planned_epochs"] * meta["steps_per_epoch"]
    # that training ends within its budget and about an epoch is held by the fake-clock
    # tests above; this real run shares the CPU with the other test worker, so its wall
    # time is not asserted here (the inspect benchmark prints it)
    # the learning rate each epoch used (Keras's epoch lines): from the base rate, and once
    # the first epochs have refined the plan, the cosine over the plan in force while the
    # epoch ran. A plan changed at an epoch's end ("-> N epochs", logged before that
    # epoch's line) applies from the next epoch; when the last epoch ends late the plan
    # shrinks to the epochs done, and the rates followed the plan before.
    rates, plans, planned, pending = [], [], None, None
    for line in out.stdout.splitlines():
        change = re.search(r"-> (\d+) epochs", line)
        if change:
            pending = int(change.group(1))
        rate = re.search(r"learning_rate: ([0-9.e-]+)", line)
        if rate:
            rates.append(float(rate.group(1)))
            plans.append(planned)
            planned = pending
    epochs = budget["planned_epochs"]
    assert len(rates) == epochs >= 4 and rates[0] == 0.1 and pending == epochs
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # the epochs before the first plan run at the base rate, the later ones on its cosine
    first = next(e for e, n in enumerate(plans) if n is not None)
    assert first >= 2 and rates[:first] == [0.1] * first
    want = [0.1 * 0.5 * (1 + np.cos(np.pi * e / n)) for e, n in enumerate(plans) if e >= first]
    np.testing.assert_allclose(rates[first:], want, atol=6e-5)
    if plans[-1] == epochs:  # no late change: the cosine ends at its last value
        assert rates[-1] == pytest.approx(0.05 * (1 + np.cos(np.pi * (epochs - 1) / epochs)),
                                          abs=6e-5)


def test_epochs_that_slow_down_late_shorten_the_plan_to_end_on_time(tmp_path):
    """After the first quarter the plan holds while it ends within an epoch of the budget;
    when later epochs take twice as long, it shrinks so training still ends on time."""
    cb, clock, var, plan = _budget(tmp_path, minutes=2.0, steps_per_epoch=2)
    epoch = _train(cb, clock, 2, step_seconds=lambda e: 1.0 if e < 20 else 2.0)
    assert epoch == plan.epochs < 60
    assert clock.now <= 120.0 + 2.0  # the budget and at most half a (slow) epoch


def test_a_checkpoint_every_few_epochs_counts_in_the_plan(tmp_path):
    """Short epochs (1 s) with a 5 s checkpoint after every fifth: the plan counts the
    mean epoch (2 s), not the median (1 s), and the run ends on time."""
    cb, clock, var, plan = _budget(tmp_path, minutes=2.0, steps_per_epoch=1)
    epoch = _train(cb, clock, 1, after_epoch=lambda e: 5.0 if (e + 1) % 5 == 0 else 0.0)
    assert clock.now <= 120.0 + 6.0
    assert epoch == plan.epochs < 70
    assert stored_plan(tmp_path / "budget.json")["epoch_seconds"] == pytest.approx(2.0, rel=0.1)
