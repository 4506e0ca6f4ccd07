"""The GAN example: two disjoint groups, two optimizers, samples move onto the modes."""

import os
import sys

import jax
import pytest
import numpy as np

import alternating
from alternating import partition
from alternating.models import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import gan  # noqa: E402


def test_mode_stats_on_known_samples():
    exact = gan.mode_stats(np.repeat(gan.modes(), 10, axis=0))
    assert exact == {"mode_dist": 0.0, "modes_covered": 8, "near_frac": 1.0}
    origin = gan.mode_stats(np.zeros((50, 2), np.float32))
    assert abs(origin["mode_dist"] - gan.RADIUS) < 1e-6 and origin["modes_covered"] == 0


@pytest.mark.slow
def test_gan_smoke_generator_moves_to_the_modes(tmp_path):
    cfg = gan.get_config("smoke")
    state = alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, plot=False,
                                           print_fn=None)
    model = get_model(cfg.model)
    z = jax.random.normal(jax.random.PRNGKey(9), (2000, 2))
    p0 = model.init(jax.random.split(jax.random.PRNGKey(cfg.seed))[0])
    before = gan.mode_stats(np.asarray(model.apply(p0, z, part="generator")))
    after = gan.mode_stats(np.asarray(model.apply(state.params, z, part="generator")))
    assert before["mode_dist"] > 1.0 and before["modes_covered"] == 0
    assert after["mode_dist"] < 0.5 * before["mode_dist"] and after["mode_dist"] < 0.5, after
    assert after["modes_covered"] >= 3, after
    # Two optimizers, each over its own group only.
    for phase, group in (("critic", "critic/"), ("generator", "generator/")):
        mu = partition.flatten(state.opt_state[phase][0].mu)
        assert mu and all(p.startswith(group) for p in mu), (phase, sorted(mu))
    assert {k: int(v) for k, v in state.phase_steps.items()} == {"critic": 1000, "generator": 1000}
