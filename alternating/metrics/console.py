"""Console output: the progress bar and the start-up and final tables."""

from __future__ import annotations

import math
import numbers
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np


class Progress:
    """A progress bar: step/total, rate, ETA, current phase and last losses.

    On a terminal it is a tqdm bar on stderr (redrawn at most every 0.5 s).
    When stderr is not a terminal (CI logs, `make ... | tee`) it prints a plain
    line every 10% instead, since carriage-return redraws turn into one
    enormous line in a log file.

    `update` is called every step and costs one comparison on most steps
    (~0.1 us): the bar and its postfix are touched only every ~0.1 s, at a
    step stride re-estimated from the measured rate. tqdm's `set_postfix`
    costs tens of microseconds, far more than a fused step.

    Args:
      total_steps: the step count at which training ends.
      initial_step: steps already done (e.g. restored from a checkpoint).
      disable: True turns the bar off (pass `jax.process_index() != 0` so that
        only one host prints). None, the default, means enabled, unlike tqdm's
        own None (off when not a TTY): users read progress in CI logs too.
      file: the stream to write to; defaults to `sys.stderr`.
    """

    _TICK_SECONDS = 0.1
    _LOG_FRACTION = 0.1

    def __init__(self, total_steps: int, *, initial_step: int = 0,
                 disable: bool | None = None, file: Any = None):
        self.total = int(total_steps)
        self.disabled = bool(disable)
        self._silent = self.disabled
        self._file = sys.stderr if file is None else file
        self._done = int(initial_step)  # Steps completed, as shown.
        self._phase = ""
        self._losses: dict[str, float] = {}
        self._bar = None
        self._start_time = time.monotonic()
        self._start_done = self._done
        self._last_line_done = self._done
        self._last_tick_time = self._start_time
        self._last_tick_done = self._done
        # Next step index at which update() does any work.
        self._next = self._done
        self._next_log = self._done
        self._last = self._done
        if self.disabled:
            self._next = sys.maxsize
            return
        isatty = getattr(self._file, "isatty", None)
        self._tty = bool(isatty and isatty())
        if self._tty:
            import tqdm  # pylint: disable=g-import-not-at-top
            self._bar = tqdm.tqdm(
                total=self.total, initial=self._done, file=self._file, unit="step",
                mininterval=0.5, dynamic_ncols=True, smoothing=0.1, leave=True)
        else:
            self._log_stride = max(1, math.ceil(self.total * self._LOG_FRACTION))
            self._next_log = (self._done // self._log_stride + 1) * self._log_stride
            self._next = self._next_log

    def update(self, step: int, phase: str) -> None:
        """Notes that a step of `phase` finished, making `step` steps done. Cheap.

        Args:
          step: steps completed so far, counting the one just run (the global
            step after it, `state.step`); the bar shows `step / total_steps`.
          phase: the phase that ran it.
        """
        self._last = step  # For close(): the steps after the last tick count too.
        if step >= self._next:
            self._tick(step, phase)

    def set_loss(self, phase: str, loss: Any) -> None:
        """Shows `loss` as the last logged loss of `phase` (call at log steps)."""
        if self.disabled:
            return
        self._losses[phase] = float(loss)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def write(self, text: str) -> None:
        """Prints a line (e.g. an evaluation table) without garbling the bar.

        Prints nothing when the bar was created with `disable=True`, so other
        hosts stay quiet.
        """
        if self._silent:
            return
        if self._bar is not None and not self.disabled:
            self._bar.write(text, file=self._file)
        else:
            self._file.write(text + "\n")
            self._file.flush()

    def _postfix(self) -> str:
        losses = " ".join(f"{p}={v:.4g}" for p, v in self._losses.items())
        if self._phase and losses:
            return f"phase={self._phase} loss: {losses}"
        return f"phase={self._phase}" if self._phase else (f"loss: {losses}" if losses else "")

    def _tick(self, step: int, phase: str) -> None:
        self._phase = phase
        done = step
        now = time.monotonic()
        if self._bar is not None:
            if done > self._done:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._bar.update(done - self._done)
            self._done = done
            # Re-estimate the stride so the next tick comes ~0.1 s from now.
            dt = now - self._last_tick_time
            dn = done - self._last_tick_done
            stride = max(1, int(dn * self._TICK_SECONDS / dt)) if dt > 0 else 1
            stride = min(stride, 2 * max(dn, 1))  # Grow gradually after slow steps.
            self._last_tick_time, self._last_tick_done = now, done
            self._next = step + stride
        else:
            self._done = done
            if done >= self._next_log:
                self._print_line(now)
                self._next_log = (done // self._log_stride + 1) * self._log_stride
            self._next = self._next_log

    def _print_line(self, now: float) -> None:
        from tqdm import tqdm as _tqdm  # pylint: disable=g-import-not-at-top
        elapsed = now - self._start_time
        ran = self._done - self._start_done
        rate = ran / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self._done / self.total if self.total else 100.0
        eta = (self.total - self._done) / rate if rate > 0 else 0.0
        line = (f"step {self._done}/{self.total} ({pct:.0f}%) "
                f"elapsed {_tqdm.format_interval(elapsed)} "
                f"eta {_tqdm.format_interval(eta)} {rate:.1f} steps/s")
        postfix = self._postfix()
        self._file.write(f"{line} | {postfix}\n" if postfix else line + "\n")
        self._last_line_done = self._done
        self._file.flush()

    def close(self) -> None:
        """Finishes the bar (or prints the final line). Safe to call twice."""
        if self.disabled:
            return
        if self._last > self._done:
            self._next_log = sys.maxsize  # close() prints the final line itself.
            self._tick(self._last, self._phase)
        self.disabled = True
        self._next = sys.maxsize
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
        elif self._done > self._last_line_done:
            self._print_line(time.monotonic())  # The last 10% line was not printed.

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """Formats metrics as a plain-text table: one row per set, one column per metric.

    Columns are the metric names in order of first appearance; a set lacking a
    metric shows `-`. Floats use 4 significant digits, integers print whole.

    Args:
      rows: `{set_name: {metric: value}}`, e.g. final evaluation metrics.
      title: an optional line printed above the table.

    Returns:
      The table, lines joined by newlines, no trailing newline.
    """
    columns: list[str] = []
    for metrics in rows.values():
        for name in metrics:
            if name not in columns:
                columns.append(name)
    header = ["set", *columns]
    body = [[str(set_name), *(_format_value(m.get(c)) for c in columns)]
            for set_name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned so their digits line up.
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    lines = [] if title is None else [title]
    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(r) for r in body)
    return "\n".join(lines)

