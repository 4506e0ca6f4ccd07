"""A small replay + EWC task stream for the kill -9 test, runnable as a script.

``python tests/cl_replay_worker.py WORKDIR [KILL_AT]`` trains it (or resumes
it: same command). With ``KILL_AT`` the process SIGKILLs itself at the first
hook event at or after that step, once a checkpoint saved inside task 3 is
on disk (saves are asynchronous; without the wait a loaded machine resumes
from task 2), with no cleanup, as ``kill -9`` from outside. The hook is in
the config either way, so the resumed run's config is the killed one's. The
test calls :func:`run` in-process for the reference and the resume.
Nothing is drawn (no ``curves.png``, no heatmap): the test compares numbers.
"""

import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import alternating  # noqa: E402
from configs import cl_replay  # noqa: E402

STEPS = 20  # per task; 5 tasks, task 3 (index 2) is steps 40..59
KILL_ENV = "CL_REPLAY_KILL_AT"


class KillAt:
    """Hook: SIGKILL this process once the step reaches ``$CL_REPLAY_KILL_AT``."""

    name = "kill_at"

    def __init__(self):
        self.when = {"every": 5}

    def __call__(self, state, event, ctx):
        at = os.environ.get(KILL_ENV)
        if at and not getattr(ctx, "dry_run", False) and event.step >= int(at):
            saved = os.path.join(ctx.workdir, "checkpoints", str(3 * STEPS - 15))
            deadline = time.time() + 120
            while not os.path.isdir(saved) and time.time() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)


def config():
    c = cl_replay.get_config("split_digits,power_law,ewc,smoke")
    c.schedule = {"name": "sequential", "stages": [[s[0], STEPS] for s in c.schedule["stages"]]}
    c.total_steps = 5 * STEPS
    c.checkpoint_every_steps, c.max_checkpoints_to_keep, c.log_every_steps = 15, 2, 5
    c.hooks = list(c.hooks) + [{"name": "cl_replay_worker:KillAt"}]
    c.evaluators = [dict(c.evaluators[0], plot=False)]  # the matrix, not its heatmap
    return c


def run(workdir, **kw):
    kw = {"progress": False, "plot": False, "print_fn": None, **kw}
    return alternating.train_and_evaluate(config(), str(workdir), **{"executor": "host", **kw})


if __name__ == "__main__":
    if len(sys.argv) > 2:
        os.environ[KILL_ENV] = sys.argv[2]
    run(sys.argv[1])
