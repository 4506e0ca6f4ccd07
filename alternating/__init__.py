"""alternating: training schemes that switch between phases, in JAX.

A scheme is a set of :class:`Phase` objects (each a loss, a data stream, the
parameters it may change and its own optimizer state) plus a schedule that
picks the phase of every step. See the README for a tour.
"""

from alternating.checkpoint import CheckpointError
from alternating.loop import EXIT_NONFINITE, EXIT_PREEMPTED, EvalSet, NonFiniteError, Preempted, train
from alternating.phase import Phase, make_optimizer
from alternating.state import TrainState
from alternating.experiment import load_state, train_and_evaluate
from alternating import schedules
from alternating import convex_relu, cross_phase, regression_transformer  # register losses  # noqa: F401,E501

__version__ = "0.1.0"

__all__ = ["CheckpointError", "EXIT_NONFINITE", "EXIT_PREEMPTED", "EvalSet", "NonFiniteError",
           "Phase", "Preempted", "TrainState", "load_state", "make_optimizer", "schedules",
           "train", "train_and_evaluate", "__version__"]
