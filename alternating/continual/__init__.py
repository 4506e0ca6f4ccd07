"""Continual learning: task-stream losses and the accuracy-matrix evaluator.

* :mod:`.losses`: ``task_masked_classification`` (task-incremental: the
  softmax over the example's task's classes) and ``active_classification``
  (class-incremental expanding head: cross-entropy over the classes seen so
  far);
* :mod:`.regularizers`: :class:`TaskAnchor` (hook ``task_anchor``: the
  previous task's parameters and their diagonal Fisher, EWC / online EWC / L2)
  and the loss ``ewc_classification``;
* :mod:`.replay`: the in-step replay memory (rule ``replay_fill``: reservoir
  or class-balanced, filled from every training batch; :func:`add_replay`),
  rehearsal weights (uniform, exponential or power-law in the time since a
  task was trained) in the loss ``replay_classification``, and the task-end
  :class:`ReplayMemory` hook (``replay_memory``);
* :mod:`.distill`: :class:`TaskSnapshot` (hook ``task_snapshot``) and the
  losses ``lwf_classification`` (prediction distillation, LwF) and
  ``feature_distill_classification``;
* :mod:`.heads`: :class:`ClassStatistics` (hook ``class_statistics``: class
  means and a shared covariance of a frozen body) and the loss
  ``head_classification`` (nearest-mean or LDA head);
* :mod:`.merging`: weight averaging, task arithmetic, AdaMerging (hook
  ``task_snapshots``, evaluator ``merge``, :func:`load_params` from workdirs);
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

from alternating.continual.distill import (TaskSnapshot, feature_distill_classification,
                                           lwf_classification)
from alternating.continual.heads import ClassStatistics, head_classification
from alternating.continual.losses import active_classification, task_masked_classification
from alternating.continual.matrix import AccuracyMatrix, continual_metrics, plot_matrix
from alternating.continual.merging import (MergeError, MergeEvaluator, TaskSnapshots, adamerging,
                                           load_params, task_arithmetic, weight_average)
from alternating.continual.regularizers import TaskAnchor, ewc_classification
from alternating.continual.replay import ReplayMemory, add_replay, replay_classification

__all__ = ["AccuracyMatrix", "active_classification", "ClassStatistics", "MergeError", "MergeEvaluator", "ReplayMemory",
           "TaskAnchor", "TaskSnapshot", "TaskSnapshots", "adamerging", "add_replay", "continual_metrics",
           "ewc_classification", "feature_distill_classification", "head_classification",
           "load_params", "lwf_classification", "plot_matrix", "replay_classification",
           "task_arithmetic", "task_masked_classification", "weight_average"]
