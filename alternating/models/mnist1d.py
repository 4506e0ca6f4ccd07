"""The three MNIST-1D baselines of the dataset's paper, as model factories.

Shapes and initialization follow the reference PyTorch models of the
``greydanus/mnist1d`` repository (``notebooks/models.py``; paper: S. Greydanus
and D. Kobak, "Scaling Down Deep Learning with MNIST-1D", arXiv:2011.14439),
re-stated here from their published sizes:

* ``logistic``: one linear layer, 40 -> 10 (410 parameters).
* ``mlp``: 40 -> 100 -> 100 -> 10 with ReLU; the second hidden layer is added
  to its input (``h + relu(W2 h + b2)``) before the output layer
  (15,210 parameters).
* ``cnn``: three 1-D convolutions with 25 channels, kernels 5, 3 and 3, each
  with stride 2, one sample of zero padding on each side and a ReLU
  (40 -> 19 -> 10 -> 5 positions), then one linear layer from the 5 x 25 = 125
  features to 10 (5,210 parameters).

Every layer is initialized as PyTorch initializes ``nn.Linear`` and
``nn.Conv1d`` by default: weights and biases uniform in
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (fan_in: inputs per output unit, times
the kernel size for a convolution).

Nothing imports this module: a config names a factory by path, e.g.
``model=dict(name="alternating.models.mnist1d:cnn")`` (see
``configs/mnist1d.py``).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alternating.models import Model

__all__ = ["Logistic", "ResidualMLP", "PaperCNN", "logistic", "mlp", "cnn", "num_params"]

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights: variance scaling with scale 1/3.
_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _bias_init(fan_in: int):
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=_KERNEL_INIT, bias_init=_bias_init(fan_in), name=name)


class Logistic(nn.Module):
    """Flatten, then one linear layer (multinomial logistic regression)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        return _dense(self.num_classes, x.shape[-1], "linear")(x)


class ResidualMLP(nn.Module):
    """Flatten; ``h = relu(W1 x)``; ``h = h + relu(W2 h)``; ``W3 h`` (biases throughout)."""

    hidden: int = 100
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        h = nn.relu(_dense(self.hidden, x.shape[-1], "linear1")(x))
        h = h + nn.relu(_dense(self.hidden, self.hidden, "linear2")(h))
        return _dense(self.num_classes, self.hidden, "linear3")(h)


class PaperCNN(nn.Module):
    """1-D convolutions with ReLU on (length, channels) signals, then one linear layer."""

    channels: int = 25
    kernels: Sequence[int] = (5, 3, 3)
    stride: int = 2
    padding: int = 1
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            x = x[..., None]
        for i, k in enumerate(self.kernels):
            fan_in = x.shape[-1] * k
            x = nn.Conv(self.channels, (k,), strides=(self.stride,),
                        padding=[(self.padding, self.padding)], kernel_init=_KERNEL_INIT,
                        bias_init=_bias_init(fan_in), name=f"conv{i + 1}")(x)
            x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        return _dense(self.num_classes, x.shape[-1], "linear")(x)


def logistic(*, input_shape=(40, 1), num_classes: int = 10) -> Model:
    """The paper's logistic-regression baseline (410 parameters on MNIST-1D)."""
    return Model(Logistic(num_classes=int(num_classes)), {"x": tuple(input_shape)})


def mlp(*, input_shape=(40, 1), num_classes: int = 10, hidden: int = 100) -> Model:
    """The paper's MLP baseline (15,210 parameters on MNIST-1D)."""
    return Model(ResidualMLP(hidden=int(hidden), num_classes=int(num_classes)),
                 {"x": tuple(input_shape)})


def cnn(*, input_shape=(40, 1), num_classes: int = 10, channels: int = 25,
        kernels: Sequence[int] = (5, 3, 3), stride: int = 2, padding: int = 1) -> Model:
    """The paper's CNN baseline (5,210 parameters on MNIST-1D)."""
    return Model(PaperCNN(channels=int(channels), kernels=tuple(int(k) for k in kernels),
                          stride=int(stride), padding=int(padding),
                          num_classes=int(num_classes)),
                 {"x": tuple(input_shape)})


def num_params(model: Model) -> int:
    """Number of parameters of ``model`` (from shapes only; nothing is computed)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
