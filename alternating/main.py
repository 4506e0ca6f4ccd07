"""Command line: ``python -m alternating.main --config=configs/default.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<field>=<value>``; configs
are locked, so a misspelt field is an error rather than a silently ignored
flag. Running the same command again resumes from the workdir's newest good
checkpoint.

Exit codes: 0 done; 1 an error (bad config, a checkpoint that does not fit);
2 bad command-line flags; 3 a non-finite loss or metric stopped the run
(``EXIT_NONFINITE``); 75 a SIGTERM/SIGINT stopped the run after saving a
checkpoint: run the same command again to resume (``EXIT_PREEMPTED``).

Several processes (one per host, or several on one machine for trying it
out): pass ``--coordinator_address=host:port --num_processes=N
--process_id=i`` to every process (on TPU pods and SLURM these are detected
when omitted with ``--distributed``). ``experiments/launch_local.py`` starts N
processes on localhost.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (implied by --num_processes > 1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """``jax.distributed.initialize``, with gloo collectives when the devices are CPUs."""
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and TFDS log every save and read at INFO; keep the console for
        # the progress bar and the results unless asked (--verbosity=0).
        logging.set_verbosity(logging.WARNING)
    if _DISTRIBUTED.value or (_NUM_PROCESSES.value or 1) > 1:
        initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from alternating import loop  # pylint: disable=g-import-not-at-top
    from alternating.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
    from alternating.experiment import train_and_evaluate  # pylint: disable=g-import-not-at-top
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except loop.NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(loop.EXIT_NONFINITE)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def run():
    """Console-script entry point (``alternating``)."""
    app.run(main)


if __name__ == "__main__":
    run()
