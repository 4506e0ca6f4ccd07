"""Paper-specific models, losses and rules, beside the library (big_vision's ``proj/``).

Each module registers its own names with :mod:`alternating.registry`, which
imports this package the first time a config names something it does not
know; the package root never imports scheme code.

* :mod:`.convex_relu`: the convex two-layer ReLU program and its ADMM losses
  and rules (``admm_primal``, ``relu_weight_decay``; models ``convex_relu``,
  ``relu_net``);
* :mod:`.regression_transformer`: property prediction and conditional
  generation with one sequence model (``rt_predict``, ``rt_generate``; model
  ``seq_model``);
* :mod:`.cross_phase`: losses that read what other phases produce (GAN
  critic and generator, mean teacher, adversarial training, TRADES, stale
  policy gradients).
"""

from alternating.schemes import convex_relu, cross_phase, regression_transformer  # noqa: F401
