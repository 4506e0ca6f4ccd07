"""Command line: ``python -m alternating.main --config=configs/default.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<field>=<value>``; configs
are locked, so a misspelt field is an error rather than a silently ignored
flag.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from alternating.experiment import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and TFDS log every save and read at INFO; keep the console for
        # the progress bar and the results unless asked (--verbosity=0).
        logging.set_verbosity(logging.WARNING)
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run():
    """Console-script entry point (``alternating``)."""
    app.run(main)


if __name__ == "__main__":
    run()
