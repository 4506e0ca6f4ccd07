r"""Continual learning with a replay memory filled from the training batches, in the step.

``configs/continual.py``'s task streams (its variants and its ``ewc``/``l2``
methods) plus ``alternating.continual.replay.add_replay``: a 200-example
memory in the ``TrainState`` (``extras['replay']``), offered every training
batch by the rule ``replay_fill``, and the loss ``replay_classification``
replaying 32 examples a step from it (see docs/continual.md, Replay).

Variant: ``:<stream>[,<mode>][,<weighting>][,ewc|l2][,smoke]`` with

* ``<stream>``: ``split_digits`` (default), ``split_digits_task``,
  ``split_mnist1d``, ``permuted_digits`` (configs/continual.py);
* ``<mode>``: ``reservoir`` (default: a uniform sample of every example
  trained on) or ``class_balanced`` (equal slots per class seen so far);
* ``<weighting>``: none (default: uniform over the memory), or rehearsal
  weights over the past tasks by the time since each was last trained,
  ``uniform``, ``exponential`` (``exp(-d)``) or ``power_law`` (``1 / (1 + d)``),
  ``d`` in tasks;
* ``ewc`` / ``l2``: also the TaskAnchor penalty (replay and EWC together).

Command::

    python -m alternating.main --config=configs/cl_replay.py:split_digits --workdir=runs/clr
"""

from alternating.continual import replay
from configs import continual

MODES = replay.MODES
WEIGHTINGS = replay.WEIGHTINGS


def parse(arg):
    toks = [t for t in (arg or "").split(",") if t]
    modes = [t for t in toks if t in MODES]
    weights = [t for t in toks if t in WEIGHTINGS]
    rest = [t for t in toks if t not in MODES and t not in WEIGHTINGS]
    if len(modes) > 1 or len(weights) > 1 or "replay" in rest:
        raise ValueError(f"configs/cl_replay.py: variant {arg!r}: give at most one mode of "
                         f"{list(MODES)} and one weighting of {list(WEIGHTINGS)} (replay is "
                         "always on here).")
    continual.parse(",".join(rest))  # the stream, ewc/l2 and smoke: its errors list the choices
    return ",".join(rest), (modes or ["reservoir"])[0], (weights or [None])[0]


def get_config(arg=None):
    rest, mode, weighting = parse(arg)
    c = continual.get_config(rest)
    return replay.add_replay(c, size=200, mode=mode, weighting=weighting, batch_size=32)
