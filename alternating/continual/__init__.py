"""Continual learning: task-stream losses and the accuracy-matrix evaluator.

* :mod:`.losses`: ``task_masked_classification`` (task-incremental: the
  softmax over the example's task's classes);
* :mod:`.matrix`: :class:`AccuracyMatrix` (R[i][j], accuracy on task j after
  training task i, with ACC, BWT, FWT, forgetting and learning accuracy),
  :func:`continual_metrics` and :func:`plot_matrix`.

The task streams themselves (class-, task- and domain-incremental splits of a
dataset) are data: :func:`alternating.data.tasks.make_tasks`. Importing this
package registers the loss ``task_masked_classification`` and the evaluator
``accuracy_matrix``; configs may also name them as
``alternating.continual.losses:task_masked_classification`` and
``alternating.continual.matrix:AccuracyMatrix``, which need no import first.
See ``docs/continual.md``.
"""

from alternating.continual.losses import task_masked_classification
from alternating.continual.matrix import AccuracyMatrix, continual_metrics, plot_matrix

__all__ = ["AccuracyMatrix", "continual_metrics", "plot_matrix", "task_masked_classification"]
