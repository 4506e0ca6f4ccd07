"""alternating: training schemes that switch between phases, in JAX.

A scheme is a set of :class:`Phase` objects (each a loss, a data stream, the
parameters it may change and its own optimizer state) plus a schedule that
picks the phase of every step. See the README for a tour.
"""

from alternating.checkpoint import CheckpointError
from alternating.evaluation import EvalSet
from alternating.loop import train
from alternating.nonfinite import EXIT_NONFINITE, NonFiniteError
from alternating.signals import EXIT_PREEMPTED, Preempted
from alternating.phase import Phase, make_optimizer
from alternating.state import TrainState
from alternating.experiment import load_state, train_and_evaluate
from alternating import hooks, schedules, sweep
from alternating.hooks import hook
from alternating.options import RunOptions

__version__ = "0.1.0"

__all__ = ["CheckpointError", "EXIT_NONFINITE", "EXIT_PREEMPTED", "EvalSet", "NonFiniteError",
           "Phase", "Preempted", "RunOptions", "TrainState", "hook", "hooks", "load_state",
           "make_optimizer", "schedules", "sweep", "train", "train_and_evaluate", "__version__"]
