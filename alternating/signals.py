"""Stop signals: SIGTERM/SIGINT (or a multi-host preemption notice) -> save and stop.

A stop signal finishes the current step (or chunk), saves a checkpoint and
raises :class:`Preempted`, a ``SystemExit`` with code ``EXIT_PREEMPTED`` (75):
rerunning the same command resumes. A second SIGINT interrupts at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("alternating")

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, retry": rerun to resume.


class Preempted(SystemExit):
    """A stop signal arrived; the run saved a checkpoint and stops.

    A ``SystemExit`` with code ``EXIT_PREEMPTED`` (75), so a script that does
    not catch it exits with that code, which a job scheduler can treat as
    "requeue me". Rerunning the same command resumes from the saved step.
    """

    def __init__(self, step: int, signum: int | None):
        super().__init__(EXIT_PREEMPTED)
        self.step = step
        self.signum = signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name if self.signum else "a preemption notice"
        return (f"stopped by {name} after step {self.step}; checkpoint saved. Run the same "
                f"command again to resume (exit code {EXIT_PREEMPTED}).")


class StopSignals:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step.

    Single process: Python handlers set the flag (a second SIGINT raises
    KeyboardInterrupt at once). Several processes: a signal reaches one host,
    but all must save at the same step, so the loop asks JAX's preemption sync
    point (``multihost_utils.reached_preemption_sync_point``), which the
    coordination service turns into one agreed step; JAX's own SIGTERM
    notifier feeds it, so no Python SIGTERM handler is installed there.
    """

    def __init__(self, enabled: bool, multiprocess: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.multiprocess = multiprocess
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._sync_point = multiprocess

    def _handler(self, signum, frame):  # pylint: disable=unused-argument
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing the current step, then saving and stopping "
                    "(SIGINT again to stop at once).", signal.Signals(signum).name)

    def __enter__(self):
        if self.enabled:
            sigs = [signal.SIGINT] if self.multiprocess else [signal.SIGTERM, signal.SIGINT]
            for sig in sigs:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        if self._sync_point:
            from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signum = self.signum or signal.SIGTERM
                    return True
            except RuntimeError:  # preemption service disabled
                self._sync_point = False
            return False
        return self.signum is not None
