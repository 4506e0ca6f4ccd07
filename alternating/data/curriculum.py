"""Data curricula inside a phase: epochs over a score-chosen subset whose size varies.

Cyclical curriculum learning (Kesgin & Amasyali 2022, arXiv:2202.05531) trains
each epoch on a subset of the data whose size cycles, e.g. 0.25, 0.5, 1, 0.5,
0.25, ... of it, the examples chosen by a score of how easy they are (the
true-class probability of a vanilla model, or the current model's own loss:
self-paced). `CurriculumStream` is a `pipeline.Stream` with such epochs:

* epoch ``e`` has ``n_e = max(B, round(sizes[e] * N))`` examples (``sizes``
  cycled, or its last value held when ``cycle=False``: a monotone curriculum)
  and ``n_e // B`` batches (the remainder is dropped: each epoch is its own
  subset);
* its subset is drawn by score without replacement: ``sampling='weighted'``
  picks ``n_e`` examples with probability proportional to the score
  (Gumbel top-k with ``default_rng((seed, e))``), ``'top'`` the ``n_e``
  highest scores; the subset is then shuffled;
* scores are fixed (``scores``), or re-read at the start of every epoch from
  ``scorer(epoch)`` (self-paced: e.g. ``exp(-loss)`` of the current model).

`get_state` holds the position, the scores in force and the subsets of the
epochs already begun, so `set_state` resumes the exact order, even after the
scores changed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from alternating.data.pipeline import Stream

CCL_SIZES = (0.25, 0.5, 1.0, 0.5)


class CurriculumStream(Stream):
    """A `Stream` whose epochs are score-chosen subsets of varying size.

    Args:
      arrays: the examples (``x``, ``y``, ...).
      batch_size: global batch size.
      seed: subset and order seed.
      scores: one positive score per example (higher: easier), or None for
        uniform scores (a random subset of the epoch's size).
      sizes: fractions of the data, one per epoch, cycled (``cycle=True``)
        or with the last held.
      sampling: ``'weighted'`` (by score, without replacement) or ``'top'``.
      scorer: ``scorer(epoch) -> scores``, called when an epoch begins.
      **kw: as for `Stream` (process_index, process_count, num_classes,
        description).

    Raises:
      ValueError: a size outside (0, 1], a wrong number of scores, a
        non-positive or non-finite score, an unknown sampling.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], *, batch_size: int, seed: int,
                 scores: Optional[Sequence[float]] = None, sizes: Sequence[float] = CCL_SIZES,
                 cycle: bool = True, sampling: str = 'weighted',
                 scorer: Optional[Callable[[int], Any]] = None, **kw):
        super().__init__(arrays, batch_size=batch_size, seed=seed, **kw)
        sizes = [float(s) for s in sizes]
        if not sizes or any(not 0.0 < s <= 1.0 for s in sizes):
            raise ValueError(f'curriculum sizes={sizes}: give fractions of the data in (0, 1].')
        if sampling not in ('weighted', 'top'):
            raise ValueError(f"curriculum sampling={sampling!r}; valid: ['weighted', 'top'].")
        self.sizes, self.cycle, self.sampling, self.scorer = sizes, bool(cycle), sampling, scorer
        n, b = self.num_examples, self.batch_size
        self._epoch_sizes = [max(b, int(round(s * n))) for s in sizes]
        self._epoch_batches = [m // b for m in self._epoch_sizes]
        self._cum = np.cumsum(self._epoch_batches)
        self.scores = self._check_scores(scores)
        self._subsets: dict[int, np.ndarray] = {}

    def _check_scores(self, scores) -> np.ndarray:
        if scores is None:
            return np.ones(self.num_examples)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != self.num_examples:
            raise ValueError(f'curriculum scores: {s.shape[0]} scores for {self.num_examples} '
                             'examples; give one per example.')
        if not np.isfinite(s).all() or (s <= 0).any():
            raise ValueError('curriculum scores must be finite and > 0 (higher: easier); '
                             'e.g. the true-class probability, or exp(-loss).')
        return s

    def set_scores(self, scores: Sequence[float]) -> None:
        """New scores, used from the next epoch that begins."""
        self.scores = self._check_scores(scores)

    def epoch_size(self, epoch: int) -> int:
        i = epoch % len(self.sizes) if self.cycle else min(epoch, len(self.sizes) - 1)
        return self._epoch_sizes[i]

    def _locate(self, batch: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global batch ``batch``."""
        if not self.cycle and batch >= self._cum[-1]:
            extra = batch - int(self._cum[-1])
            last = self._epoch_batches[-1]
            return len(self.sizes) + extra // last, extra % last
        per_cycle = int(self._cum[-1])
        c, r = divmod(batch, per_cycle)
        i = int(np.searchsorted(self._cum, r, side='right'))
        start = int(self._cum[i - 1]) if i else 0
        return c * len(self.sizes) + i, r - start

    def subset(self, epoch: int) -> np.ndarray:
        """The example indices of ``epoch``, in the order they are served."""
        got = self._subsets.get(epoch)
        if got is not None:
            return got
        if self.scorer is not None:
            self.set_scores(self.scorer(epoch))
        m = self.epoch_size(epoch)
        rng = np.random.default_rng((self.seed, epoch, 1))
        if self.sampling == 'top':
            # Stable: ties keep index order; the order is then shuffled.
            chosen = np.argsort(-self.scores, kind='stable')[:m]
        else:
            keys = np.log(self.scores) + rng.gumbel(size=self.num_examples)
            chosen = np.argpartition(-keys, m - 1)[:m] if m < self.num_examples else np.arange(m)
        chosen = rng.permutation(np.sort(chosen))
        if len(self._subsets) >= 2:
            self._subsets.pop(min(self._subsets))
        self._subsets[epoch] = chosen
        return chosen

    def _indices(self, batch: int) -> np.ndarray:
        epoch, k = self._locate(batch)
        sub = self.subset(epoch)
        lo = k * self.batch_size + self._offset  # this process's slice of the global batch
        return sub[lo:lo + self.local_batch_size]

    def _fingerprint(self) -> dict[str, Any]:
        return {**super()._fingerprint(), 'sizes': self.sizes, 'cycle': self.cycle,
                'sampling': self.sampling}

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), 'scores': self.scores.tolist(),
                'subsets': {str(e): s.tolist() for e, s in self._subsets.items()}}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.scores = self._check_scores(state['scores'])
        self._subsets = {int(e): np.asarray(s, np.int64) for e, s in state['subsets'].items()}

    def __repr__(self) -> str:
        return (f'CurriculumStream(batch_size={self.batch_size}, num_examples={self.num_examples}, '
                f'sizes={self.sizes}, cycle={self.cycle}, sampling={self.sampling!r}, '
                f'seed={self.seed})')


_SPEC_KEYS = ('sizes', 'cycle', 'sampling', 'scores')


def from_spec(spec: Any, arrays: Mapping[str, np.ndarray], **kw) -> CurriculumStream:
    """Builds a `CurriculumStream` from a data spec's ``curriculum`` entry.

    ``scores`` may be a list or the path of a ``.npy`` file (e.g. written by a
    scoring run).

    Raises:
      ValueError: unknown keys (the valid ones are named).
    """
    spec = dict(spec.to_dict() if hasattr(spec, 'to_dict') else spec)
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f'curriculum: unknown keys {unknown}; valid keys: {list(_SPEC_KEYS)}.')
    scores = spec.pop('scores', None)
    if isinstance(scores, str):
        scores = np.load(scores)
    return CurriculumStream(arrays, scores=scores, **spec, **kw)
