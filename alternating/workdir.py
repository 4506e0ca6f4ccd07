"""The run directory: one run at a time, usable before training starts, and
the logs of an earlier run kept rather than mixed into a new one.

* ``WorkdirLock(workdir)``: an exclusive lock for the life of a run. The lock
  is ``fcntl.flock`` on ``WORKDIR/.lock``, held through an open file
  descriptor, so the kernel releases it when the process dies however it dies
  (SIGKILL, OOM, a lost node): a lock can never outlive its run. The file
  itself only says who holds it (JSON ``{pid, host, started}``); a file left
  by a dead run, whose flock is free, is taken over with a warning. The file
  is emptied on release and never deleted: deleting it would let a process
  that opened the old file and one that creates a new one both "hold" the
  lock. With several processes of one JAX run, only process 0 locks.
* ``check_writable(workdir)``: creates the directory and fails at once, with
  one message naming the path and the fix, when it cannot hold a run (a path
  component is a file, the file system is read-only, the path is too long
  for the file system), rather than after the first compile.
* ``set_aside_logs(workdir, reason)``: moves the log files of an earlier run
  into ``WORKDIR/previous/<time>/``; nothing is deleted.

Errors are ``WorkdirError`` (a ``RuntimeError``), not ``CheckpointError``: a
locked or unwritable directory says nothing about the checkpoints in it, and
callers that catch ``CheckpointError`` to mean "this checkpoint is unusable"
must not catch a second run started on the same directory.

Caveats: flock on a network file system works only where the client supports
it (Linux NFS clients emulate it with byte-range locks); where flock is not
supported at all the run goes on unlocked, with a warning. A child forked
without exec (a data worker) shares the descriptor, and so holds the lock
until it exits too. A second ``WorkdirLock`` in the same process is refused
like another process's (flock belongs to the open file, not the process).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from typing import Any

LOCK_FILE = ".lock"
PREVIOUS_DIR = "previous"
# What a run writes at the top of its workdir besides checkpoints (see
# ``metrics.files.MetricWriter``, ``loop.train``, ``plots``).
LOG_FILES = ("metrics.jsonl", "timeline.jsonl", "results.json", "curves.png",
             "probabilities.png", "tensorboard", "best")
# A generous bound on the longest path the library writes below a workdir:
# checkpoints_damaged/<step>.orbax-checkpoint-tmp-<time>-<time>-<k>/state/
# ocdbt.process_<i>/d/<32 hex digits> is about 140 characters.
LONGEST_INSIDE = 200

log = logging.getLogger("alternating")


class WorkdirError(RuntimeError):
    """The run directory cannot be used: not writable, or its paths too long."""


class WorkdirLockedError(WorkdirError):
    """Another live process holds the run directory's lock."""


class WorkdirLock:
    """An exclusive lock on a run directory, for the life of a run.

    Usage::

        with WorkdirLock(workdir, process_index=jax.process_index()):
            ...  # train

    Args:
      workdir: the run directory (created if missing).
      process_index: this process's index in a multi-process JAX run; only
        process 0 locks (the others share its directory). ``None``: ask
        ``jax.process_index()``.

    Raises (on ``acquire``/``__enter__``):
      WorkdirLockedError: a live process holds the lock; the message names
        its pid, host and start time, and the lock file.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, process_index: int | None = None):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self.process_index = process_index
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WorkdirLock:
        """Takes the lock (process 0 only; a no-op on the other processes)."""
        if self._fd is not None:
            return self
        if self.process_index is None:
            import jax  # pylint: disable=g-import-not-at-top
            self.process_index = jax.process_index()
        if self.process_index != 0:
            return self
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirLockedError(
                    f"{self.workdir} is in use by another run: {_describe(holder)} holds "
                    f"{self.path}. Wait for that run to finish or stop it, or give this run "
                    "another workdir. (The lock is released when its process exits, so a "
                    "lock held here belongs to a live process.)") from None
            log.warning("cannot lock %s (%s): this file system does not support flock; "
                        "running without the workdir lock, so make sure no other run uses "
                        "this directory.", self.path, e)
            return self
        stale = _read_holder(fd)
        if stale:
            log.warning("took over the lock %s left by %s, which has exited without "
                        "releasing it (the file remained; the lock did not).",
                        self.path, _describe(stale))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empties the lock file and releases the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file: nobody to warn about next time
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        holder = None
    return holder if isinstance(holder, dict) else {"unreadable": True}


def _describe(holder: dict[str, Any]) -> str:
    if not holder or holder.get("unreadable"):
        return "a process (its pid and host are not recorded yet or unreadable)"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


def check_writable(workdir: str | os.PathLike[str]) -> str:
    """Creates ``workdir`` if needed and checks that a run can write in it.

    Checks that each path component fits the file system's ``NAME_MAX``, that
    the path plus ``LONGEST_INSIDE`` characters fits its ``PATH_MAX``, that the
    path is a directory, and that a file can be created in it.

    Args:
      workdir: the run directory.

    Returns:
      The absolute path of the directory.

    Raises:
      WorkdirError: one message naming the path, what is wrong and the fix.
    """
    path = os.path.abspath(os.fspath(workdir))
    fix = "Pass another --workdir (workdir=...)"
    name_max, path_max = _limits(path)
    for part in path.split(os.sep):
        if len(part) > name_max:
            raise WorkdirError(
                f"workdir {path!r}: the name {part[:40]!r}... has {len(part)} characters; this "
                f"file system allows {name_max}. {fix} with shorter names.")
    if len(path) + LONGEST_INSIDE > path_max:
        raise WorkdirError(
            f"workdir {path!r} has {len(path)} characters; the files a run writes below it "
            f"need up to {LONGEST_INSIDE} more, and this file system allows {path_max} in "
            f"all. {fix} with a shorter path.")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        what = "is" if blocker == path else f"is below {blocker!r}, which is"
        raise WorkdirError(f"workdir {path!r} {what} a file, not a directory. {fix}, or move "
                           "that file away.")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"workdir {path!r} is not writable ({e.strerror or e}). {fix} on a writable file "
            "system, or fix its permissions.") from e
    return path


def _limits(path: str) -> tuple[int, int]:
    """``(NAME_MAX, PATH_MAX)`` of the file system of ``path``'s nearest existing ancestor."""
    probe = path
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096  # Linux's defaults


def _file_in_the_way(path: str) -> str | None:
    """The nearest existing non-directory among ``path`` and its ancestors."""
    probe = path
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    return None


def set_aside_logs(workdir: str | os.PathLike[str], reason: str) -> str | None:
    """Moves an earlier run's logs to ``WORKDIR/previous/<time>/``; deletes nothing.

    The files of ``LOG_FILES`` present at the top of ``workdir`` are moved
    (``tensorboard/`` whole, with its event files), with a ``REASON.txt``
    holding ``reason``. Checkpoints and the lock file stay. Call it from one
    process only (process 0).

    Args:
      workdir: the run directory.
      reason: why (e.g. "a fresh start: no checkpoint restores"), kept with them.

    Returns:
      The new directory, or ``None`` when there was nothing to move.
    """
    root = os.fspath(workdir)
    present = [n for n in LOG_FILES if os.path.lexists(os.path.join(root, n))]
    if not present:
        return None
    base = os.path.join(root, PREVIOUS_DIR, time.strftime("%Y%m%d-%H%M%S"))
    dst, k = base, 0
    while os.path.lexists(dst):
        k += 1
        dst = f"{base}-{k}"
    os.makedirs(dst)
    for name in present:
        os.rename(os.path.join(root, name), os.path.join(dst, name))
    with open(os.path.join(dst, "REASON.txt"), "w") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}: {reason}\n")
    log.info("moved the logs of an earlier run (%s) to %s: %s.", ", ".join(present), dst,
                reason)
    return dst
