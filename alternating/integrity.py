"""Checkpoint integrity: a checksum manifest per checkpoint, and the finite-state check.

Every checkpoint directory holds ``manifest.json``: each file's size and
BLAKE2b-128 checksum, written by process 0 after every process has written
its files and before Orbax renames the temporary directory (so the manifest
is part of the atomic save). :func:`manifest_problems` finds a missing file,
another size or, for corruption that keeps the size (a bit flip, an
overwritten block), another checksum. A restored state with a NaN (or an
infinity outside the optimizer state, where e.g. ``reduce_on_plateau`` keeps
+inf) is damage too (:func:`nonfinite_leaves`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "alternating-checkpoint-manifest/1"
# Written by Orbax while it renames the temporary directory, after the manifest.
NOT_COVERED = ("_CHECKPOINT_METADATA", "commit_success.txt")
# Top-level state fields where an infinity is a legal value rather than damage.
_INF_ALLOWED_UNDER = ("opt_state",)
_CHUNK = 1 << 20


def _file_hash(path: str) -> tuple[int, str]:
    """``(bytes read, hex BLAKE2b-128)`` of a file's contents."""
    h, size = hashlib.blake2b(digest_size=16), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _covered_files(step_dir: str) -> list[str]:
    out = []
    for root, dirs, names in os.walk(step_dir):
        dirs.sort()
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), step_dir).replace(os.sep, "/")
            if rel not in NOT_COVERED and not rel.startswith(MANIFEST):
                out.append(rel)
    return out


def write_manifest(step_dir: str, step: int | None = None) -> dict[str, Any]:
    """Writes ``step_dir/manifest.json`` (atomically): every file's size and checksum.

    Args:
      step_dir: a checkpoint's directory (or Orbax's temporary one).
      step: recorded in the manifest.

    Returns:
      The manifest written.
    """
    files = {}
    for rel in _covered_files(step_dir):
        size, digest = _file_hash(os.path.join(step_dir, rel))
        files[rel] = {"size": size, "blake2b": digest}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "hash": "blake2b-128",
                "not_covered": list(NOT_COVERED), "files": files}
    fd, tmp = tempfile.mkstemp(dir=step_dir, prefix=MANIFEST + ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(step_dir, MANIFEST))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return manifest


def manifest_problems(step_dir: str, items: Iterable[str] | None = None) -> list[str] | None:
    """How ``step_dir``'s files differ from its manifest.

    Args:
      step_dir: a checkpoint's directory.
      items: check only the files of these items (top-level folders).

    Returns:
      ``None`` when there is no manifest; else one line per problem (a
      missing file, another size, another checksum, an unreadable
      manifest), empty when every file matches.
    """
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except Exception as e:  # pylint: disable=broad-except
        return [f"{MANIFEST} unreadable ({type(e).__name__}: {e})"]
    prefixes = None if items is None else tuple(f"{i}/" for i in items)
    problems = []
    for rel, want in sorted(files.items()):
        if prefixes is not None and not rel.startswith(prefixes):
            continue
        full = os.path.join(step_dir, *rel.split("/"))
        try:
            size = os.path.getsize(full)
            if size != want["size"]:
                problems.append(f"{rel}: {size} bytes, the manifest says {want['size']}")
            elif _file_hash(full)[1] != want["blake2b"]:
                problems.append(f"{rel}: contents differ (checksum mismatch, same size)")
        except OSError as e:
            problems.append(f"{rel}: {'missing' if not os.path.exists(full) else e}")
    return problems


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths of float leaves holding a NaN, or an infinity outside ``opt_state``.

    Reads the shards this process holds (each distinct shard once).
    """
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            continue
        key = "/".join(key_str(k) for k in path)
        if isinstance(leaf, jax.Array):
            parts = {str(s.index): s.data for s in leaf.addressable_shards}.values()
        else:
            parts = [leaf]
        allow_inf = key.split("/")[0] in _INF_ALLOWED_UNDER
        for part in parts:
            x = np.asarray(part)
            if np.isnan(x).any() or (not allow_inf and np.isinf(x).any()):
                bad.append(key)
                break
    return bad




def key_str(k: Any) -> str:
    """One path element of a pytree key path, as text."""
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)
