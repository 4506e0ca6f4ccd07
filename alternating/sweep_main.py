r"""Command line of :mod:`alternating.sweep`: a grid of config overrides times seeds.

::

    python -m alternating.sweep_main --config=configs/default.py:smoke \
        --grid='phases.images.optimizer.lr=[1e-3,3e-3]' --seeds=3 \
        --metric=images_test/accuracy --workdir=runs/lr_sweep

* ``--grid='<dotted path>=[v1,v2,...]'``, repeatable: the cells are the
  product of the axes. Values are Python literals (``1e-3``, ``"cosine"``,
  ``(64, 64)``, ``{"name": "alternate"}``); a bare word is a string.
* ``--cell='{"<dotted path>": value, ...}'``, repeatable, instead of
  ``--grid``: the cells one by one (``--cell='{}'`` is the base config).
* ``--seeds=N`` (seeds ``0..N-1``) or ``--seeds=3,4,5``.
* ``--metric=<eval set>/<metric>``, ``--baseline=<cell id or index>``
  (default the first cell), ``--claim=greater|less``: the comparison table
  and plot (``comparison.md``, ``comparison.png``); without ``--metric`` only
  ``sweep.json`` is written.
* ``--vectorize=auto|on|off|grid``: a cell's seeds in one ``num_seeds``
  program where the config allows (``auto``), always (``on``: refuse a config
  that does not), never (``off``); ``grid``: as ``auto``, and cells that
  differ only in learning rates train together in one program.
* ``--config.<field>=<value>`` overrides the base config, as with
  ``alternating.main``.

Running the same command again resumes: finished runs are kept, the rest run.
A different ``--metric``/``--baseline`` on a finished sweep only rewrites the
comparison. Exit codes: 0 done (failed runs are listed in ``sweep.json``); 1
an error (bad grid, bad config, a workdir made by another sweep); 2 bad flags.
"""

from __future__ import annotations

import ast
import shlex
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags



def define_flags() -> None:
    """Defines the command line's flags (at run time, not import: the module is
    importable beside :mod:`alternating.main`, whose ``--config`` would clash)."""
    config_flags.DEFINE_config_file("config", None, "Base config file (path[:variant]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The sweep's directory (rerun to resume).")
    flags.DEFINE_multi_string("grid", [], "An axis: '<dotted path>=[v1,v2,...]'.")
    flags.DEFINE_multi_string("cell", [], "A cell: '{\"<dotted path>\": value, ...}'.")
    flags.DEFINE_string("seeds", "3", "A count N (seeds 0..N-1) or a list '3,4,5'.")
    flags.DEFINE_string("metric", None, "'<eval set>/<metric>' to compare.")
    flags.DEFINE_string("baseline", "0", "The baseline cell: its id or index.")
    flags.DEFINE_enum("claim", "greater", ["greater", "less"],
                      "Which direction of the metric beats the baseline.")
    flags.DEFINE_float("alpha", 0.05, "The verdict's interval is 1 - alpha.")
    flags.DEFINE_enum("vectorize", "auto", ["auto", "on", "off", "grid"],
                      "A cell's seeds in one num_seeds program; grid: and cells that differ "
                      "only in learning rates too.")
    flags.mark_flags_as_required(["config", "workdir"])


def literal(text: str) -> Any:
    """A Python literal, or ``text`` itself when it is not one (a bare word)."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_grid(axes: list[str]) -> dict[str, list]:
    """``['path=[v1,v2]', ...]`` -> ``{path: [v1, v2]}``.

    Raises:
      ValueError: an axis without ``=``, given twice, or whose values are not a list.
    """
    grid: dict[str, list] = {}
    for axis in axes:
        path, sep, text = axis.partition("=")
        path = path.strip()
        if not sep or not path:
            raise ValueError(f"--grid={axis!r}; write --grid='<dotted path>=[v1,v2,...]'.")
        if path in grid:
            raise ValueError(f"--grid: axis {path!r} given twice; list its values once.")
        values = literal(text)
        if isinstance(values, str) and values.startswith("[") and values.endswith("]"):
            values = [literal(v) for v in values[1:-1].split(",")]  # bare words in a list
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"--grid={axis!r}: the values must be a list, e.g. "
                             f"{path}=[{text}].")
        grid[path] = list(values)
    return grid


def parse_cell(text: str) -> dict[str, Any]:
    """``'{"path": value}'`` -> ``{path: value}``.

    Raises:
      ValueError: not a dict literal with string keys.
    """
    cell = literal(text)
    if not isinstance(cell, dict) or not all(isinstance(k, str) for k in cell):
        raise ValueError(f"--cell={text!r}; write --cell='{{\"<dotted path>\": value, ...}}' "
                         "(--cell='{}': the base config).")
    return cell


def parse_seeds(text: str) -> int | list[int]:
    """``'5'`` -> 5 (seeds 0..4); ``'3,4,5'`` -> [3, 4, 5]."""
    try:
        return [int(s) for s in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise ValueError(f"--seeds={text!r}; give a count (5) or a list (3,4,5).") from None


def drop_flag(args: list[str], flag: str) -> list[str]:
    """``args`` without ``flag`` and its value (``--flag=v`` or ``--flag v``): a
    command to print or store minus a machine path such as ``--workdir``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def command(argv: list[str]) -> str:
    """The command that reproduces the sweep, without ``--workdir`` (a machine path)."""
    return "python -m alternating.sweep_main " + shlex.join(drop_flag(list(argv[1:]), "--workdir"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    from alternating.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
    F = flags.FLAGS  # pylint: disable=invalid-name
    try:
        if bool(F.grid) == bool(F.cell):
            raise ValueError("give --grid (one or more axes) or --cell (one or more cells), "
                             "not both or neither.")
        baseline = F.baseline
        sweep.run(
            F.config, F.workdir,
            grid=parse_grid(F.grid) if F.grid else None,
            cells=[parse_cell(c) for c in F.cell] if F.cell else None,
            seeds=parse_seeds(F.seeds), metric=F.metric,
            baseline=int(baseline) if baseline.isdigit() else baseline,
            claim=F.claim, alpha=F.alpha, vectorize=F.vectorize,
            name=config_flags.get_config_filename(flags.FLAGS["config"]),
            command=command(sys.argv))
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def run():
    """Console-script entry point (``alternating-sweep``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
