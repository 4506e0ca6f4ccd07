"""TensorBoard event files, written synchronously (see :class:`EventFile`)."""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any, Iterable, Mapping


class EventFile:
    """One TensorBoard event file, written synchronously.

    Records are TFRecords (length, masked CRC32C of it, a serialized
    ``Event``, masked CRC32C of that), built with the protos and CRC that
    tensorboardX ships. Each :meth:`write` hands its bytes to the OS, so a
    killed process loses nothing written before (no background queue, see
    the module docstring).

    The name sorts in creation order (``events.out.tfevents.<seconds>.
    <microseconds>.<host>.<pid>``; TensorBoard reads a directory's files in
    name order, and a resumed run's file must come after the killed run's
    for the purge below to apply to it). tensorboardX names files by the
    second and opens them with ``'wb'``, so a run resumed within the same
    second would have overwritten the killed run's file; this one creates
    its file exclusively.

    Args:
      logdir: the directory (created if missing).
      purge_step: on resume, the first step the resumed run writes. The file
        starts with ``SessionLog(START)`` at that step, which tells
        TensorBoard (``purge_orphaned_data``, its default) to discard the
        events of earlier files at that step or later: those the killed run
        wrote after its checkpoint.
    """

    def __init__(self, logdir: str, purge_step: int | None = None):
        # pylint: disable=g-import-not-at-top
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.record_writer import masked_crc32c
        # pylint: enable=g-import-not-at-top
        self._event_pb2, self._summary_pb2, self._crc = event_pb2, summary_pb2, masked_crc32c
        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        base = os.path.join(logdir, "events.out.tfevents.%010d.%06d.%s.%d" % (
            int(now), int((now % 1) * 1e6), socket.gethostname(), os.getpid()))
        path, k = base, 0
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                k += 1
                path = f"{base}.{k}"
        self.path = path
        self._f = os.fdopen(fd, "wb")
        first = [event_pb2.Event(wall_time=now, file_version="brain.Event:2")]
        if purge_step is not None:
            first.append(event_pb2.Event(
                wall_time=now, step=int(purge_step),
                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self._write_events(first)

    def _write_events(self, events: Iterable[Any]) -> None:
        out = []
        for event in events:
            data = event.SerializeToString()
            header = struct.pack("<Q", len(data))
            out += [header, struct.pack("<I", self._crc(header)), data,
                    struct.pack("<I", self._crc(data))]
        self._f.write(b"".join(out))
        self._f.flush()

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One event at ``step`` holding every ``{tag: value}`` of ``scalars``."""
        values = [self._summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                  for tag, v in scalars.items()]
        self._write_events([self._event_pb2.Event(
            wall_time=time.time(), step=int(step),
            summary=self._summary_pb2.Summary(value=values))])

    def sync(self) -> None:
        """Makes the file durable on disk (``fsync``); rows are already with the OS."""
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
