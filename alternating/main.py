"""Command line: ``python -m alternating.main --config=configs/default.py[:variant] --workdir=DIR``.

Any config field can be overridden with ``--config.<field>=<value>``; configs
are locked, so a misspelt field is an error rather than a silently ignored
flag. Running the same command again resumes from the workdir's newest good
checkpoint.

Exit codes: 0 done; 1 an error (a bad config value, a checkpoint that does
not fit, a workdir that cannot be used: one line ``error: ...`` naming the
field or path and the fix); 2 a usage error (an unknown flag, a config typo,
a config file that does not exist); 3 a non-finite loss or metric stopped the
run (``EXIT_NONFINITE``); 75 a SIGTERM/SIGINT stopped the run: after saving a
checkpoint when training, at once before or after it (``EXIT_PREEMPTED``). Run
the same command again to resume.

Several processes (one per host, or several on one machine for trying it
out): pass ``--coordinator_address=host:port --num_processes=N
--process_id=i`` to every process (on TPU pods and SLURM these are detected
when omitted with ``--distributed``). ``experiments/launch_local.py`` starts N
processes on localhost.
"""

import difflib
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # (alternating.signals.EXIT_PREEMPTED; not imported: it loads JAX)
EXIT_NONFINITE = 3  # (alternating.nonfinite.EXIT_NONFINITE)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (implied by --num_processes > 1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])
_OWN_FLAGS = ("config", "workdir", "distributed", "coordinator_address", "num_processes",
              "process_id")
_HELP = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")


class _Fail(Exception):
    """An error the command line reports as one line (no traceback) and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int, exc: BaseException | None = None) -> None:
    if exc is not None:  # the traceback stays available: --verbosity=1
        logging.debug("the error above came from:", exc_info=exc)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _stop_before_or_after_training(signum, frame):  # pylint: disable=unused-argument
    # Installed first thing, so a stop signal at any time after start-up exits
    # with EXIT_PREEMPTED; the training loop replaces it with its own handler
    # (finish the step, save, then stop) while it runs.
    name = signal.Signals(signum).name
    print(f"stopped by {name} outside the training loop (nothing to save there: every "
          "checkpoint written is complete). Run the same command again to resume "
          f"(exit code {EXIT_PREEMPTED}).", file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)


def _install_stop_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_or_after_training)


def help_text(program: str) -> str:
    """``--help``: the usage line, this module's flags and the exit codes."""
    lines = [f"usage: {program} --config=PATH[:VARIANT] --workdir=DIR [--config.FIELD=VALUE ...]",
             "", "Trains the scheme a config file describes; the same command resumes it.", "",
             "flags:"]
    for name in _OWN_FLAGS:
        flag = flags.FLAGS[name]
        default = "" if flag.default is None else f" (default: {flag.default!r})"
        lines.append(f"  --{name}: {flag.help}{default}")
    lines += ["  --config.FIELD=VALUE: override a field of the config (any field of "
              "alternating.experiment.TOP_LEVEL, or a nested one: --config.phases.a.optimizer.lr=0.01)",
              "  --verbosity=N: absl logging (default: warnings only)",
              "", "exit codes: 0 done; 1 error; 2 usage error; 3 non-finite value; "
              f"{EXIT_PREEMPTED} stopped by a signal (run the same command again to resume).",
              "See --helpfull for every flag of every module."]
    return "\n".join(lines)


def _config_arg(argv):
    """The value of ``--config=...`` (or ``--config ...``) in ``argv``, or None."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_config_path(argv) -> None:
    value = _config_arg(argv)
    if value is None:
        return
    path = value.split(":", 1)[0]
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise _Fail(f"--config={value}: the config file {path!r} {what} (relative to "
                    f"{os.getcwd()!r}); pass the path of a config file, e.g. "
                    "--config=configs/default.py:smoke.", EXIT_USAGE)


def _load_config(argv):
    """The config ``--config`` names, without overrides (None if it does not load)."""
    try:
        config = flags.FLAGS["config"].value
        config.keys()
        return config
    except Exception:  # pylint: disable=broad-except  (not set yet, when a flag failed)
        pass
    value = _config_arg(argv)
    if value is None:
        return None
    path, _, arg = value.partition(":")
    try:
        import importlib.util  # pylint: disable=g-import-not-at-top
        spec = importlib.util.spec_from_file_location("_alternating_config_probe", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
        config.keys()
        return config
    except Exception:  # pylint: disable=broad-except  (reported by the flag's own error)
        return None


def _override_problem(argv):
    """The first ``--config.a.b=...`` naming a field the loaded config lacks, explained."""
    config = _load_config(argv)
    if config is None:
        return None
    for arg in argv[1:]:
        if not arg.startswith(("--config.", "-config.")):
            continue
        path = arg.split("=", 1)[0].split("config.", 1)[1]
        node, walked = config, []
        for key in path.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if key not in keys:
                where = "config" + "".join(f".{k}" for k in walked)
                close = difflib.get_close_matches(key, keys, n=1)
                hint = (f"did you mean --{where}.{close[0]}?" if close
                        else f"valid fields of {where}: {sorted(keys)}.")
                return (f"--config.{path}: {where} has no field {key!r}; {hint} (Configs are "
                        "locked: a field must exist to be overridden.)")
            node, walked = node[key], walked + [key]
    return None


def _one_line(text: str) -> str:
    """The last non-empty line (a traceback's exception line), without its type prefix."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else str(text)


def parse_flags(argv):
    """Parses the flags; a usage error is one ``error: ...`` line and exit code 2."""
    if any(a in _HELP or a.startswith("--help=") for a in argv[1:]):
        print(help_text(os.path.basename(argv[0]) if argv else "alternating"))
        sys.exit(0)
    try:
        _check_config_path(argv)
        try:
            rest = flags.FLAGS(argv)
        except Exception as e:  # pylint: disable=broad-except
            problem = _override_problem(argv)
            if problem:
                raise _Fail(problem, EXIT_USAGE) from e
            if isinstance(e, flags.Error):
                raise _Fail(_one_line(e), EXIT_USAGE) from e
            raise _Fail(f"{type(e).__name__}: {_one_line(e)}", EXIT_USAGE) from e
        if len(rest) > 1:
            raise _Fail(f"unexpected arguments {rest[1:]}; every argument is a --flag "
                        "(see --help).", EXIT_USAGE)
    except _Fail as e:
        _fail(str(e), e.code)
    return rest


def _message(e: BaseException) -> str:
    """An exception's message with its notes (which name e.g. the phase being checked)."""
    return "\n".join([str(e), *getattr(e, "__notes__", [])])


def main(argv):
    del argv  # (parse_flags refused any other argument)
    if not flags.FLAGS["verbosity"].present:
        # Orbax and TFDS log every save and read at INFO; keep the console for
        # the progress bar and the results unless asked (--verbosity=0).
        logging.set_verbosity(logging.WARNING)
    if _DISTRIBUTED.value or (_NUM_PROCESSES.value or 1) > 1:
        # JAX's preemption notifier handles SIGTERM there (all processes must
        # agree on the step to save at); the loop installs no SIGTERM handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        config = _CONFIG.value
        config.keys()
    except Exception as e:  # pylint: disable=broad-except
        _fail(f"--config: {_one_line(e)}", EXIT_USAGE)
    # pylint: disable=g-import-not-at-top
    from alternating.checkpoint import CheckpointError
    from alternating.experiment import train_and_evaluate
    from alternating.nonfinite import NonFiniteError
    from alternating.workdir import WorkdirError
    # pylint: enable=g-import-not-at-top
    try:
        train_and_evaluate(config, _WORKDIR.value)
    except NonFiniteError as e:
        _fail(_message(e), EXIT_NONFINITE, e)
    except (CheckpointError, WorkdirError) as e:
        _fail(_message(e), 1, e)
    except (ValueError, TypeError) as e:  # a config value (the message names the field)
        _fail(_message(e), 1, e)
    except OSError as e:
        _fail(_os_error(e, _WORKDIR.value), 1, e)


def _os_error(e: OSError, workdir: str) -> str:
    path = os.path.abspath(os.fspath(e.filename)) if e.filename else None
    root = os.path.abspath(workdir)
    text = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    if path is None or path == root or path.startswith(root + os.sep):
        return (f"{text}. Check that --workdir={workdir} is on a writable file system with "
                "free space, or pass another --workdir.")
    return text


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """``jax.distributed.initialize``, with gloo collectives when the devices are CPUs."""
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def run(argv=None):
    """Console-script entry point (``alternating``); also ``python -m alternating.main``."""
    _install_stop_handlers()
    if argv is not None:  # config_flags reads --config.* overrides from sys.argv
        sys.argv = list(argv)
    app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
