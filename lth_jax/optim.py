"""Optimizers and learning-rate schedules (optax), from plain arguments."""
from __future__ import annotations

from typing import Sequence

import optax

from lth_jax.errors import check, unknown

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def schedule(kind: str, learning_rate: float, total_steps: int, *, warmup_steps: int = 0,
             boundaries: Sequence[int] = (), decay: float = 0.1) -> optax.Schedule:
    """constant | step (x decay at each of `boundaries`, in steps) | cosine to 0;
    each optionally after a linear warm-up of `warmup_steps` from 0."""
    if kind not in SCHEDULES:
        raise unknown("schedule", kind, SCHEDULES)
    check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")
    check(0 <= warmup_steps <= total_steps,
          f"warmup_steps must be in [0, train steps = {total_steps}], got {warmup_steps}")
    rest = total_steps - warmup_steps
    if kind == "constant":
        main = optax.constant_schedule(learning_rate)
    elif kind == "step":
        check(all(0 < b for b in boundaries), f"schedule boundaries must be positive steps, got {list(boundaries)}")
        main = optax.piecewise_constant_schedule(
            learning_rate, {int(b) - warmup_steps: decay for b in boundaries if b > warmup_steps})
    else:
        main = optax.cosine_decay_schedule(learning_rate, max(rest, 1))
    if warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def optimizer(name: str, learning_rate, *, momentum: float = 0.9, weight_decay: float = 0.0,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """sgd | momentum | nesterov (coupled L2 weight decay, as in PyTorch SGD)
    | adam (coupled L2, as PyTorch Adam) | adamw (decoupled)."""
    if name not in OPTIMIZERS:
        raise unknown("optimizer", name, OPTIMIZERS)
    check(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
    decay = [optax.add_decayed_weights(weight_decay)] if weight_decay and name != "adamw" else []
    if name == "sgd":
        return optax.chain(*decay, optax.sgd(learning_rate))
    if name in ("momentum", "nesterov"):
        check(0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}")
        return optax.chain(*decay, optax.sgd(learning_rate, momentum=momentum, nesterov=name == "nesterov"))
    if name == "adam":
        return optax.chain(*decay, optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
