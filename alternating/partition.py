"""Partitions: which parameters a phase may change.

A partition is an ordered list of ``(regex, rule)`` pairs over parameter paths
(``'trunk/Dense_0/kernel'``). The first rule whose regex fully matches a path
decides that parameter: ``True`` (or ``'train'``) means the phase trains it,
``None`` / ``False`` / ``'frozen'`` means the phase leaves it bit-identical.

Two mistakes are errors rather than silent surprises (big_vision asserts the
same): a parameter no rule covers, and a rule whose regex matches no parameter
at all (usually a typo that would otherwise freeze or train the wrong thing).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np
from flax import traverse_util

SEP = "/"

_TRAIN_VALUES = (True, "train", "trainable")
_FROZEN_VALUES = (None, False, "frozen", "none")


class PartitionError(ValueError):
    """A partition rule list does not cover the parameters exactly."""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Flattens a nested params dict into ``{'a/b/c': leaf}``."""
    return traverse_util.flatten_dict(dict(tree), sep=SEP)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def _normalize_rules(rules: Any, where: str) -> list[tuple[str, bool]]:
    if rules is None:
        return [(".*", True)]
    if isinstance(rules, str):
        raise PartitionError(
            f"{where}: partition rules must be a list of (regex, True|None) "
            f"pairs, got the string {rules!r}. Example: "
            "[('trunk/.*', True), ('.*', None)].")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise PartitionError(
                f"{where}: rule {i} is {rule!r}; each rule is a (regex, "
                "True|None) pair, e.g. ('trunk/.*', True).")
        regex, value = rule
        if not isinstance(regex, str):
            raise PartitionError(f"{where}: rule {i} regex must be a string, got {regex!r}.")
        try:
            re.compile(regex)
        except re.error as e:
            raise PartitionError(f"{where}: rule {i} regex {regex!r} is invalid: {e}.") from e
        if isinstance(value, str):
            value = value.lower()
        if value in _TRAIN_VALUES:
            out.append((regex, True))
        elif value in _FROZEN_VALUES:
            out.append((regex, False))
        else:
            raise PartitionError(
                f"{where}: rule {i} ({regex!r}) has value {value!r}; valid values "
                "are True/'train' (trained by this phase) or None/False/'frozen'.")
    return out


def resolve(rules: Any, paths: Iterable[str], where: str = "partition") -> dict[str, bool]:
    """Applies ordered rules to parameter paths.

    Args:
      rules: ordered ``(regex, True|None)`` pairs; ``None`` means "train all".
      paths: every parameter path of the model.
      where: a name for error messages (e.g. ``"phase 'images'"``).

    Returns:
      ``{path: trainable}`` for every path, in the order given.

    Raises:
      PartitionError: a path that no rule covers, or a rule that matches no path.
    """
    rules = _normalize_rules(rules, where)
    paths = list(paths)
    compiled = [(re.compile(r), r, v) for r, v in rules]
    decided: dict[str, bool] = {}
    uncovered = []
    used = [False] * len(compiled)
    for path in paths:
        for i, (rx, _, value) in enumerate(compiled):
            if rx.fullmatch(path):
                used[i] = True
                if path not in decided:
                    decided[path] = value
        if path not in decided:
            uncovered.append(path)
    if uncovered:
        raise PartitionError(
            f"{where}: no rule covers these parameters: {uncovered}. Add a rule "
            "for them, e.g. ('.*', None) last to freeze everything else. Rules: "
            f"{[r for r, _ in rules]}.")
    unused = [r for (_, r, _), u in zip(compiled, used) if not u]
    if unused:
        raise PartitionError(
            f"{where}: rules {unused} match no parameter (regexes must match the "
            f"whole path). Parameter paths: {paths}.")
    return decided


def split(params: Mapping[str, Any], trainable: Mapping[str, bool]):
    """Splits params into (trained subtree, frozen flat dict).

    The trained part is a *nested* dict holding only the phase's own leaves,
    so gradients and optimizer state exist for nothing else.
    """
    flat = flatten(params)
    own = {p: v for p, v in flat.items() if trainable[p]}
    rest = {p: v for p, v in flat.items() if not trainable[p]}
    return unflatten(own), rest


def merge(own: Mapping[str, Any], rest: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split`."""
    flat = dict(rest)
    flat.update(flatten(own))
    return unflatten(flat)


def table(params: Mapping[str, Any], partitions: Mapping[str, Mapping[str, bool]]) -> str:
    """A start-up table: which phase trains which parameters, and how many.

    Args:
      params: the model parameters (shapes are read, values are not).
      partitions: ``{phase: {path: trainable}}``.
    """
    flat = flatten(params)
    phases = list(partitions)
    header = ["parameter", "shape", "size"] + phases
    rows = []
    totals = {p: 0 for p in phases}
    for path, leaf in flat.items():
        size = int(np.prod(np.shape(leaf)))
        marks = []
        for ph in phases:
            on = partitions[ph][path]
            marks.append("train" if on else ".")
            totals[ph] += size if on else 0
        rows.append([path, str(tuple(np.shape(leaf))), f"{size:,}"] + marks)
    total = sum(int(np.prod(np.shape(v))) for v in flat.values())
    rows.append(["total trained", "", f"{total:,}"] + [f"{totals[p]:,}" for p in phases])
    frozen = [p for p in flat if not any(partitions[ph][p] for ph in phases)]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
    lines = [fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows]
    if frozen:
        lines.append(f"frozen in every phase: {len(frozen)} parameter(s)")
    return "\n".join(lines)
