r"""The infinite learning-rate schedule: warm-up, cool-down, constant, anneal on demand.

Proposed for continual pre-training by Ibrahim et al., "Simple and Scalable
Strategies to Continually Pre-train Large Language Models" (TMLR 2024,
arXiv:2403.08763), and compared with repeated cosine decay by Singh et al.,
"Beyond Cosine Decay: On the effectiveness of Infinite Learning Rate Schedule
for Continual Pre-training" (arXiv:2503.02844), whose cosine cool-down and
exponential anneal this module follows. With :math:`s` the schedule's
position (its optimizer's step count, starting at 0), :math:`W`
``warmup_steps``, :math:`C` ``cooldown_steps``, :math:`\eta_{max}` ``lr``,
:math:`\eta_c` = ``const_lr_factor`` :math:`\cdot \eta_{max}` and
:math:`\eta_{min}` = ``end_lr_factor`` :math:`\cdot \eta_{max}`:

* warm-up, :math:`s < W`: :math:`\eta_{max} s / W`;
* cool-down, :math:`W \le s < W + C`:
  :math:`\eta_c + (\eta_{max} - \eta_c)(1 + \cos(\pi (s - W) / C)) / 2`;
* constant afterwards: :math:`\eta_c`, never re-warmed;
* anneal on demand: for each position :math:`a` in ``anneal_at`` the
  ``anneal_steps`` :math:`K` steps before it, :math:`a - K \le s < a`, decay
  exponentially, :math:`\eta_c (\eta_{min} / \eta_c)^{(s - a + K + 1) / K}`,
  so the last step before :math:`a` runs at :math:`\eta_{min}`; from
  :math:`a` on the rate is :math:`\eta_c` again.

"On demand" is therefore a list of schedule positions, fixed in the config:
e.g. every task end of a continual stream, where the accuracy matrix takes its
row (a model is wanted there). The papers anneal a branch of the run and
continue training from the constant-rate state; one trajectory cannot branch,
so here training continues from the annealed weights at :math:`\eta_c` (a
small step up from :math:`\eta_{min}`, never back to :math:`\eta_{max}`).
Default ``anneal_at``: the optimizer's expected number of steps (one anneal
at the end of training).

``cycle_steps`` (any schedule) restarts a schedule every that many
positions: ``cosine`` with ``cycle_steps`` equal to a task's steps is repeated
cosine over one optimizer state shared by the tasks.

The schedule's position is its optimizer state's step count: a phase's own
state restarts it at every phase (each task re-warms, which is what the
infinite schedule avoids), so across tasks it needs one state, i.e. the
phases of a shared optimizer group (``Phase.optimizer_group``), whose count
runs across them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

import jax.numpy as jnp


KEYS = ("cooldown_steps", "const_lr_factor", "anneal_steps", "anneal_at")
# (low, high, whole number) of its numeric keys.
_RANGES = {"cooldown_steps": (0, None, True), "const_lr_factor": (0.0, 1.0, False),
           "anneal_steps": (0, None, True), "cycle_steps": (0, None, True)}


def check_keys(spec: Mapping[str, Any], kind: str, valid: Any, where: str) -> None:
    """Refuses the infinite schedule's keys with another schedule, and its numbers out of range.

    Raises:
      ValueError: naming the key and, for a stray key, the valid keys of ``kind``.
    """
    stray = [k for k in KEYS if k in spec and kind != "infinite"]
    if stray:
        raise ValueError(f"{where}: keys {stray} belong to schedule 'infinite', not {kind!r}; "
                         f"valid keys of {kind!r}: {[k for k in valid if k not in KEYS]}.")
    for key, (low, high, whole) in _RANGES.items():
        value = spec.get(key)
        if value is None:
            continue
        rng = f"{'a whole number' if whole else 'a number'} >= {low}" + (
            f" and <= {high}" if high is not None else "")
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value < low
                or (high is not None and value > high)
                or (whole and not float(value).is_integer())):
            raise ValueError(f"{where}.{key}={value!r}; it must be {rng}.")


def cycled(fn: Callable[[Any], Any], cycle: int) -> Callable[[Any], Any]:
    """``fn`` restarted every ``cycle`` positions: ``fn(count % cycle)``."""
    return lambda count: fn(jnp.asarray(count) % cycle)


def anneal_positions(value: Any, *, warmup: int, cooldown: int, anneal_steps: int,
                     default: int, where: str) -> tuple[int, ...]:
    """``anneal_at`` checked: increasing whole positions, windows after the cool-down.

    Raises:
      ValueError: naming ``{where}.anneal_at`` or ``{where}.anneal_steps`` and
        what a valid value is.
    """
    if value is None:
        value = [default]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}.anneal_at={value!r}; give a list of schedule positions "
                         "(whole numbers > 0, increasing), e.g. every task end.")
    out = []
    for a in value:
        if (isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a)
                or not float(a).is_integer() or a <= 0):
            raise ValueError(f"{where}.anneal_at={list(value)!r}: {a!r} is not a whole number "
                             "> 0; give schedule positions (step counts).")
        out.append(int(a))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{where}.anneal_at={out}: positions must increase.")
    if out and anneal_steps < 1:
        raise ValueError(f"{where}.anneal_steps={anneal_steps}: anneals at {out} need "
                         "anneal_steps >= 1 (the steps each anneal takes).")
    starts = [a - anneal_steps for a in out]
    if out and starts[0] < warmup + cooldown:
        raise ValueError(f"{where}: the anneal ending at {out[0]} starts at {starts[0]}, before "
                         f"the cool-down ends (warmup_steps + cooldown_steps = "
                         f"{warmup + cooldown}); give a later anneal_at or fewer anneal_steps.")
    for a, b in zip(out, starts[1:]):
        if b < a:
            raise ValueError(f"{where}: anneal windows overlap ({anneal_steps} anneal_steps "
                             f"before positions {out}); give anneal_steps <= the gaps.")
    return tuple(out)


def infinite_schedule(lr: float, *, warmup: int, cooldown: int, const_factor: float,
                      end_factor: float, anneal_steps: int,
                      anneal_at: tuple[int, ...]) -> Callable[[Any], Any]:
    """The infinite schedule's ``lr_fn(count)`` (see the module; arguments already checked)."""
    const = const_factor * lr
    end = end_factor * lr
    ratio = end / const if const > 0 else 0.0

    def fn(count):
        s = jnp.asarray(count, jnp.float32)
        warm = lr * s / max(warmup, 1)
        cool = const + (lr - const) * 0.5 * (1.0 + jnp.cos(jnp.pi * (s - warmup) / max(cooldown, 1)))
        out = jnp.where(s < warmup, warm, jnp.where(s < warmup + cooldown, cool, const))
        for a in anneal_at:
            u = (s - (a - anneal_steps) + 1.0) / anneal_steps
            inside = (s >= a - anneal_steps) & (s < a)
            out = jnp.where(inside, const * jnp.power(ratio, jnp.clip(u, 0.0, 1.0)), out)
        return out

    return fn


def from_spec(spec: Mapping[str, Any], lr: float, *, default_steps: int,
              where: str) -> Callable[[Any], Any]:
    """The infinite schedule from an optimizer spec's (already range-checked) numbers.

    Raises:
      ValueError: ``anneal_at`` / ``anneal_steps`` that do not fit (see
        :func:`anneal_positions`).
    """
    warmup = int(spec.get("warmup_steps", 0))
    cooldown = int(spec.get("cooldown_steps", 0))
    anneal_steps = int(spec.get("anneal_steps", 0))
    at: tuple[int, ...] = ()
    if spec.get("anneal_at") is not None or anneal_steps:  # neither: never annealed
        at = anneal_positions(spec.get("anneal_at"), warmup=warmup, cooldown=cooldown,
                              anneal_steps=anneal_steps, default=default_steps, where=where)
    return infinite_schedule(lr, warmup=warmup, cooldown=cooldown,
                             const_factor=float(spec.get("const_lr_factor", 1.0)),
                             end_factor=float(spec.get("end_lr_factor", 0.0)),
                             anneal_steps=anneal_steps, anneal_at=at)
