"""The learning-rate schedule of a pipeline config, read and rescaled for whichever optimizer
(`rms_prop_optimizer`, `momentum_optimizer`, `adam_optimizer`) and schedule (`constant`,
`exponential_decay`, `manual_step`, `cosine_decay`) the config holds.

Like the OD API's own `optimizer_builder`, this branches on the protos' oneofs
(`WhichOneof`) and refuses a kind it does not know; it never rewrites a config into a
shape it does know (accessing `momentum_optimizer...cosine_decay_learning_rate` on an Adam
config would silently turn it into momentum + cosine).
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..core.errors import UserError

KNOWN = ("constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate",
         "cosine_decay_learning_rate")


def schedule_of(train_config) -> Tuple[str, str, object]:
    """(optimizer kind, schedule kind, the schedule message) of a `TrainConfig`."""
    kind = train_config.optimizer.WhichOneof("optimizer")
    if kind is None:
        raise UserError("the config's train_config.optimizer sets no optimizer (rms_prop_optimizer, "
                        "momentum_optimizer or adam_optimizer)")
    rate = getattr(train_config.optimizer, kind).learning_rate
    schedule = rate.WhichOneof("learning_rate")
    if schedule not in KNOWN:
        raise UserError(f"train_config.optimizer.{kind} has learning-rate schedule {schedule!r}, which medtfod "
                        f"cannot rescale (known: {', '.join(KNOWN)})")
    return kind, schedule, getattr(rate, schedule)


def base_rate(train_config) -> float:
    """The schedule's base (peak) learning rate."""
    _, kind, s = schedule_of(train_config)
    return {"constant_learning_rate": lambda: s.learning_rate,
            "exponential_decay_learning_rate": lambda: s.initial_learning_rate,
            "manual_step_learning_rate": lambda: s.initial_learning_rate,
            "cosine_decay_learning_rate": lambda: s.learning_rate_base}[kind]()


def _steps(value: int, ratio: float) -> int:
    return max(1, round(value * ratio)) if value else value


def rescale(train_config, steps: Optional[int] = None, learning_rate: Optional[float] = None,
            warmup_steps: Optional[int] = None) -> None:
    """Set the run length, base rate and warm-up of `train_config`'s schedule, in its own kind.

    `steps` sets `num_steps` and stretches every step-valued field of the schedule by
    steps / the old `num_steps` (cosine: `total_steps` = steps); `learning_rate` sets the base
    rate and scales the schedule's other rates (warm-up, burn-in, floor, manual steps) by the
    same factor; `warmup_steps` sets the warm-up (cosine `warmup_steps`, exponential
    `burnin_steps`).

    Raises:
      UserError: no optimizer, an unknown schedule, or a warm-up asked of a schedule without one.
    """
    _, kind, s = schedule_of(train_config)
    old_steps = train_config.num_steps
    ratio = steps / old_steps if steps and old_steps else 1.0
    factor = learning_rate / base_rate(train_config) if learning_rate and base_rate(train_config) else None
    if kind == "cosine_decay_learning_rate":
        if steps:
            if s.total_steps and warmup_steps is None:
                warmup_steps = max(1, round(s.warmup_steps * steps / s.total_steps)) if s.warmup_steps else 0
            s.hold_base_rate_steps = _steps(s.hold_base_rate_steps, steps / s.total_steps if s.total_steps else 1.0)
            s.total_steps = steps
        if warmup_steps is not None:
            s.warmup_steps = warmup_steps
        if learning_rate:
            s.warmup_learning_rate = s.warmup_learning_rate * factor if factor else s.warmup_learning_rate
            s.learning_rate_base = learning_rate
        if s.warmup_steps > s.total_steps:
            raise UserError(f"--warmup-steps {s.warmup_steps} is longer than the run ({s.total_steps} steps); the OD "
                            "API's cosine schedule refuses that: give fewer warm-up steps or more --steps")
    elif kind == "exponential_decay_learning_rate":
        s.decay_steps = _steps(s.decay_steps, ratio)
        s.burnin_steps = _steps(s.burnin_steps, ratio) if warmup_steps is None else warmup_steps
        if learning_rate:
            if factor:
                s.burnin_learning_rate *= factor
                s.min_learning_rate *= factor
            s.initial_learning_rate = learning_rate
    elif kind == "manual_step_learning_rate":
        if warmup_steps is not None:
            raise UserError("--warmup-steps: manual_step_learning_rate has no warm-up length (its `warmup` flag "
                            "ramps to the first step's rate); set the schedule's steps with --set instead")
        for point in s.schedule:
            point.step = _steps(point.step, ratio)
            if factor:
                point.learning_rate *= factor
        if learning_rate:
            s.initial_learning_rate = learning_rate
    else:  # constant
        if warmup_steps is not None:
            raise UserError("--warmup-steps: constant_learning_rate has no warm-up; use cosine_decay_learning_rate "
                            "(warmup_steps) or exponential_decay_learning_rate (burnin_steps)")
        if learning_rate:
            s.learning_rate = learning_rate
    if steps:
        train_config.num_steps = steps
