"""Periodic in-step work: an extras rule at ``every=200`` vs the same run without it.

A costly extras update rule (two matrix products per weight matrix, the
shape of a Fisher or regularizer refresh) runs on phase ``a``'s steps with
``every: 200``. Since the loop redesign such a rule runs under ``lax.cond``,
so the other 199 steps do not compute it; before, it was computed every
step and its result selected with ``jnp.where``. Three arms, side by side in
one process (``mlp`` workload of ``harness.py``, host executor, ``diff``
clock):

* ``none``: no rule;
* ``cond``: the rule with ``every: 200`` (the library now);
* ``where``: the rule computed every step and kept every 200th (what the
  library did before; written here as a rule with ``every: 1`` that selects).

Usage::

    python benchmarks/periodic.py            # a minute or two on 2 cores
    python benchmarks/periodic.py --quick    # smoke check, seconds

The last line is one JSON object: ``cond_vs_none`` (target >= 0.9) and
``where_vs_none``.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import optax

import harness
from alternating.phase import Phase

EVERY = 200


def heavy(value, params, extras, rng, count):
    """A costly rule: two matrix products per weight matrix."""
    del extras, rng, count

    def one(v, p):
        if p.ndim != 2:
            return v
        return jnp.tanh(v + (p @ p.T) @ p * 1e-3).astype(v.dtype)
    return jax.tree.map(one, value, params)


def selected(value, params, extras, rng, count):
    """The old way: compute every step, keep every EVERY-th."""
    new = heavy(value, params, extras, rng, count)
    on = (count + 1) % EVERY == 0
    return jax.tree.map(lambda n, o: jnp.where(on, n, o), new, value)


def phases(arm: str, workload: str):
    rule = {"cond": [{"extra": "t", "rule": heavy, "every": EVERY}],
            "where": [{"extra": "t", "rule": selected, "every": 1}], "none": []}[arm]
    return [Phase("a", "classification", data="train", optimizer=optax.adam(harness.LR),
                  updates=rule),
            Phase("b", "classification", data="train",
                  params=[(f"{harness.last_layer(workload)}/.*", True), (".*", None)],
                  optimizer=optax.adam(harness.LR))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    workload = "mlp"
    n1, n2, mark = (None, 60, 10) if args.quick else (600, 2600, 200)
    repeats = 1 if args.quick else args.repeats
    extras = {"t": {"kind": "copy"}}
    rates = {arm: [] for arm in ("none", "cond", "where")}
    for r in range(repeats):
        order = list(rates)[r % 3:] + list(rates)[:r % 3]
        for arm in order:
            orig = harness.library_phases
            harness.library_phases = lambda w, arm=arm: phases(arm, w)
            try:
                wall, _ = harness.diff_rates(
                    lambda n: harness.run_library(workload, n, mark, 1000,
                                                  extras=extras if arm != "none" else None),
                    n1, n2, mark)
            finally:
                harness.library_phases = orig
            rates[arm].append(wall)
    med = {arm: harness.summary(v)["median"] for arm, v in rates.items()}
    for arm, v in rates.items():
        print(f"{arm:6s} {med[arm]:9.1f} steps/s  (min {min(v):.1f}, max {max(v):.1f})")
    print(json.dumps({"benchmark": "periodic", "workload": workload, "every": EVERY,
                      "steps_per_s": med, "cond_vs_none": med["cond"] / med["none"],
                      "where_vs_none": med["where"] / med["none"], "target": 0.9,
                      "repeats": repeats, **harness.machine()}))


if __name__ == "__main__":
    main()
