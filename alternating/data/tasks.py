"""Continual-learning task streams: one dataset split into a sequence of tasks.

:func:`make_tasks` turns a short task spec into a :class:`TaskStream`, from
which a config takes its data streams, phases, schedule and evaluation::

    stream = make_tasks({'kind': 'class', 'dataset': 'digits', 'num_tasks': 5,
                         'classes_per_task': 2, 'steps_per_task': 300})
    c.data, c.phases = stream.data(), stream.phases()
    c.schedule, c.total_steps = stream.schedule(), stream.total_steps
    c.evaluators = [stream.evaluator()]          # the accuracy matrix

The three scenarios of van de Ven & Tolias ("Three scenarios for continual
learning", 2019) are three ``kind`` values:

* ``class`` (class-incremental): the classes are split into ``num_tasks``
  disjoint groups by a class ``order`` (given, or drawn from ``seed``); task
  ``t`` trains on the examples of its group. Labels stay global, so the model
  is tested on every class seen so far without being told the task.
* ``task`` (task-incremental): the same split, and every example carries its
  task id in ``batch['task']`` (the ``task_id`` transform), so a loss can
  restrict the logits to the task's classes
  (``alternating.continual.losses:task_masked_classification``, the default
  loss of this kind).
* ``domain`` (domain-incremental): ``num_tasks`` copies of the full dataset,
  each with its own fixed pixel permutation (``domain='permute'``, seeded
  per task from ``seed``) or rotation (``domain='rotate'``: task ``t`` turned
  by ``t`` quarter turns, so at most 4 tasks); the label space is shared.

A task's data spec is the base spec (``dataset``, its split and
``transforms``) with one more transform appended (``class_subset``,
``task_id``, ``permute`` or ``rotate``, see :mod:`alternating.data.transforms`),
so every stream is an ordinary data spec: checkpoints, resume and both
executors treat it like any other. Every mistake in a task spec (an unknown
field or kind, classes that overlap or that the dataset lacks, more classes
asked for than it has) is a ``ValueError`` naming the field and the valid
choices, raised here, before anything is read or compiled.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from alternating.data import builders
from alternating.data import transforms as transforms_lib

__all__ = [
    'DOMAINS',
    'KINDS',
    'TASK_FIELDS',
    'TASK_MASKED_LOSS',
    'Task',
    'TaskStream',
    'make_tasks',
]

KINDS = ('class', 'task', 'domain')
DOMAINS = ('permute', 'rotate')
# The loss task-incremental phases use by default (importable path: it resolves
# without the continual package having registered its names first).
TASK_MASKED_LOSS = 'alternating.continual.losses:task_masked_classification'
ACCURACY_MATRIX = 'alternating.continual.matrix:AccuracyMatrix'

TASK_FIELDS = {
    'kind': f'one of {list(KINDS)} (class-, task- or domain-incremental)',
    'dataset': 'a dataset name (digits, mnist1d, a prepared TFDS dataset) or arrays {x, y}',
    'split': "the training split (default 'train')",
    'test_split': "the split each task is tested on (default 'test')",
    'transforms': 'transforms applied before the task transform (default none)',
    'batch_size': 'global training batch size of every task (default 64)',
    'num_tasks': 'number of tasks (required)',
    'classes_per_task': 'class/task kinds: classes in each task (default: classes // num_tasks)',
    'order': 'class/task kinds: a class order, split into consecutive groups, or a list of '
             "per-task class lists; None: drawn from 'seed'",
    'seed': 'draws the class order (class/task) or the permutations (domain); default 0',
    'domain': f"domain kind: one of {list(DOMAINS)} (default 'permute')",
    'steps_per_task': 'training steps of each task: an int or one per task (default 300)',
    'num_classes': "the dataset's number of classes after 'transforms' (default: read from "
                   'the dataset)',
    'name': "task names are '<name><t>' (default 'task_')",
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a stream.

    Attributes:
      name: the task's name; also the name of its phase and data stream.
      index: its position in the stream (0-based).
      classes: the global labels its examples carry (all classes for ``domain``).
      train: its training data spec (with ``batch_size``).
      test: its test data spec (no ``batch_size``; evaluators choose one).
      steps: its training steps.
    """

    name: str
    index: int
    classes: tuple[int, ...]
    train: dict
    test: dict
    steps: int


@dataclasses.dataclass(frozen=True)
class TaskStream:
    """A sequence of tasks and the config fields that train them in order."""

    kind: str
    tasks: tuple[Task, ...]
    num_classes: int

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def total_steps(self) -> int:
        return sum(t.steps for t in self.tasks)

    def data(self) -> dict[str, dict]:
        """``{task: training data spec}`` (``config.data``)."""
        return {t.name: _copy(t.train) for t in self.tasks}

    def default_loss(self) -> tuple[str, dict]:
        """``(loss, loss_kwargs)`` of this kind: masked to the task's classes for ``task``."""
        if self.kind == 'task':
            return TASK_MASKED_LOSS, {'classes': [list(t.classes) for t in self.tasks]}
        return 'classification', {}

    def phases(self, *, loss: Any = None, loss_kwargs: Optional[Mapping[str, Any]] = None,
               params: Optional[Sequence[Sequence[Any]]] = None,
               optimizer: Optional[Mapping[str, Any]] = None) -> dict[str, dict]:
        """One phase per task (``config.phases``), all with the same loss and parameters.

        Args:
          loss, loss_kwargs: default :meth:`default_loss`.
          params: partition rules; default ``[('.*', True)]`` (every task
            trains every parameter).
          optimizer: default Adam, learning rate 1e-3. Each phase keeps its
            own optimizer state, so every task starts with a fresh one.
        """
        if loss is None:
            loss, default_kwargs = self.default_loss()
            loss_kwargs = {**default_kwargs, **dict(loss_kwargs or {})}
        rules = [tuple(r) for r in (params if params is not None else [('.*', True)])]
        opt = dict(optimizer) if optimizer is not None else {'name': 'adam', 'lr': 1e-3}
        return {t.name: {'loss': loss, 'loss_kwargs': dict(loss_kwargs or {}), 'data': t.name,
                         'params': list(rules), 'optimizer': dict(opt)} for t in self.tasks}

    def schedule(self) -> dict:
        """``{'name': 'sequential', 'stages': [[task, steps], ...]}`` (``config.schedule``)."""
        return {'name': 'sequential', 'stages': [[t.name, t.steps] for t in self.tasks]}

    def evals(self, batch_size: int = 128) -> dict[str, dict]:
        """``{'<task>_test': {data, phase, batch_size}}`` (``config.eval``)."""
        return {f'{t.name}_test': {'data': _copy(t.test), 'phase': t.name,
                                   'batch_size': int(batch_size)} for t in self.tasks}

    def matrix_tasks(self) -> list[dict]:
        """The ``tasks`` argument of the accuracy-matrix evaluator."""
        return [{'name': t.name, 'data': _copy(t.test), 'phase': t.name} for t in self.tasks]

    def evaluator(self, batch_size: int = 128, dense_every: int = 0, **kwargs) -> dict:
        """The accuracy-matrix evaluator spec (an entry of ``config.evaluators``)."""
        return {'name': ACCURACY_MATRIX, 'tasks': self.matrix_tasks(),
                'batch_size': int(batch_size), 'dense_every': int(dense_every), **kwargs}


def _copy(spec: Mapping[str, Any]) -> dict:
    out = dict(spec)
    if 'transforms' in out:
        out['transforms'] = [dict(t) if isinstance(t, Mapping) else t for t in out['transforms']]
    return out


# --- The task_id transform: task-incremental batches carry their task. ---------------


def task_id(arrays: transforms_lib.Arrays, task: int) -> transforms_lib.Arrays:
    """Adds ``task``: an int32 array holding ``task`` for every example."""
    return {**arrays, 'task': np.full(len(arrays['y']), int(task), np.int32)}


transforms_lib.register_transform('task_id', task_id)


# --- Building a stream. ----------------------------------------------------------------


def _fail(field: str, message: str) -> ValueError:
    return ValueError(f'tasks.{field}: {message}')


def _int(spec: Mapping[str, Any], field: str, default: Any, low: int) -> int:
    value = spec.get(field, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _fail(field, f'{value!r} is not an integer; give an integer >= {low}.')
    if value < low:
        raise _fail(field, f'{value} is too small; give an integer >= {low}.')
    return int(value)


def dataset_num_classes(spec: Mapping[str, Any], data_dir: Optional[str] = None) -> int:
    """The number of classes of a base spec's dataset after its transforms, read
    from the dataset's metadata (nothing is prepared or loaded for a named one)."""
    dataset, specs = spec['dataset'], list(spec.get('transforms') or ())
    if isinstance(dataset, Mapping):
        if 'y' not in dataset:
            raise _fail('dataset', 'in-memory arrays need "x" and "y"; got keys '
                        f'{sorted(dataset)}.')
        n: Optional[int] = int(np.max(np.asarray(dataset['y']), initial=-1)) + 1
    elif isinstance(dataset, str):
        with _quiet():
            try:
                info = tfds.builder(dataset, data_dir=builders.resolve_data_dir(data_dir)).info
            except Exception as e:  # pylint: disable=broad-except
                raise _fail('dataset', f'{dataset!r} is not a dataset the library reads '
                            f'(embedded: {sorted(builders.EMBEDDED_DATASETS)}, or a TFDS '
                            f'catalogue name): {e}') from e
        keys = info.supervised_keys
        label = info.features[keys[1]] if keys and len(keys) == 2 else None
        n = getattr(label, 'num_classes', None)
    else:
        raise _fail('dataset', f'expected a dataset name or arrays {{x, y}}, got '
                    f'{type(dataset).__name__}.')
    n = transforms_lib.transformed_num_classes(n, specs)
    if not n:
        raise _fail('num_classes', f'the number of classes of dataset {dataset!r} is not known '
                    'from its metadata; give num_classes.')
    return int(n)


@contextlib.contextmanager
def _quiet():
    # TFDS warns about data directories without metadata; only the metadata is read.
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _class_groups(spec: Mapping[str, Any], num_tasks: int, num_classes: int,
                  seed: int) -> list[list[int]]:
    """The classes of each task (class and task kinds), checked."""
    order = spec.get('order')
    cpt = spec.get('classes_per_task')
    if order is not None and not isinstance(order, (list, tuple)):
        raise _fail('order', 'expected a list of classes or of per-task class lists, got '
                    f'{order!r}.')
    nested = order is not None and len(order) > 0 and all(
        isinstance(g, (list, tuple)) for g in order)
    if nested:
        groups = [list(g) for g in order]
        if len(groups) != num_tasks:
            raise _fail('order', f'lists {len(groups)} tasks but num_tasks={num_tasks}; give one '
                        'class list per task.')
        if cpt is not None and any(len(g) != cpt for g in groups):
            raise _fail('classes_per_task', f'is {cpt}, but order has tasks of sizes '
                        f'{[len(g) for g in groups]}; drop classes_per_task or make them match.')
    else:
        if num_tasks > num_classes:
            raise _fail('num_tasks', f'{num_tasks} tasks of at least one class each, but the '
                        f'dataset has {num_classes} classes; give num_tasks <= {num_classes}.')
        if cpt is None:
            cpt = num_classes // num_tasks
        cpt = _int({'classes_per_task': cpt}, 'classes_per_task', None, 1)
        if num_tasks * cpt > num_classes:
            raise _fail('classes_per_task', f'num_tasks * classes_per_task = {num_tasks} * {cpt} = '
                        f'{num_tasks * cpt} > {num_classes}, the classes of the dataset; choose '
                        f'values with num_tasks * classes_per_task <= {num_classes} (e.g. '
                        f'classes_per_task={num_classes // num_tasks}).')
        if order is None:
            order = np.random.default_rng(seed).permutation(num_classes).tolist()
        if len(order) < num_tasks * cpt:
            raise _fail('order', f'has {len(order)} classes, but num_tasks * classes_per_task = '
                        f'{num_tasks * cpt} are needed.')
        groups = [list(order[t * cpt:(t + 1) * cpt]) for t in range(num_tasks)]
    seen: dict[int, int] = {}
    for t, group in enumerate(groups):
        if not group:
            raise _fail('order', f'task {t} has no classes.')
        for c in group:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not (
                    0 <= c < num_classes):
                raise _fail('order', f'task {t} has class {c!r}, which the dataset lacks; valid '
                            f'classes are the integers 0..{num_classes - 1}.')
            if int(c) in seen:
                raise _fail('order', f'class {int(c)} is in task {seen[int(c)]} and in task {t}; '
                            "tasks' classes must not overlap.")
            seen[int(c)] = t
    return [[int(c) for c in g] for g in groups]


def _steps(spec: Mapping[str, Any], num_tasks: int) -> list[int]:
    steps = spec.get('steps_per_task', 300)
    if isinstance(steps, (list, tuple)):
        if len(steps) != num_tasks:
            raise _fail('steps_per_task', f'lists {len(steps)} values for {num_tasks} tasks; '
                        'give one int, or one per task.')
        return [_int({'steps_per_task': s}, 'steps_per_task', None, 1) for s in steps]
    return [_int(spec, 'steps_per_task', 300, 1)] * num_tasks


def _check_fields(spec: Mapping[str, Any]) -> None:
    unknown = sorted(set(spec) - set(TASK_FIELDS))
    if unknown:
        raise ValueError(f'tasks: unknown field(s) {unknown}; valid fields: {sorted(TASK_FIELDS)}.')
    if spec.get('kind') not in KINDS:
        raise _fail('kind', f'{spec.get("kind")!r} is not a kind of task stream; valid kinds: '
                    f'{list(KINDS)}.')
    if 'dataset' not in spec:
        raise _fail('dataset', 'missing; name a dataset (e.g. "digits") or give arrays {x, y}.')
    if spec['kind'] == 'domain':
        given = [f for f in ('order', 'classes_per_task') if spec.get(f) is not None]
        if given:
            raise _fail(given[0], "applies to kinds 'class' and 'task' only; a domain-incremental "
                        'task holds every class.')
    elif spec.get('domain') is not None:
        raise _fail('domain', "applies to kind 'domain' only.")


def make_tasks(spec: Mapping[str, Any], *, data_dir: Optional[str] = None) -> TaskStream:
    """Builds a task stream from a task spec (fields: :data:`TASK_FIELDS`).

    Args:
      spec: a mapping or ConfigDict, e.g. ``{'kind': 'class', 'dataset':
        'digits', 'num_tasks': 5, 'classes_per_task': 2, 'order': None,
        'seed': 0, 'steps_per_task': 300}``.
      data_dir: where a named dataset's metadata is looked up (see
        ``builders.resolve_data_dir``); only the number of classes is read.

    Returns:
      A :class:`TaskStream`.

    Raises:
      ValueError: an unknown field, kind or domain; a non-integer or too
        small count; classes that overlap, that the dataset lacks, or more
        classes than it has (``num_tasks * classes_per_task``); more than 4
        rotated tasks. Each names the field and the valid choices.
    """
    spec = dict(spec.to_dict() if hasattr(spec, 'to_dict') else spec)
    _check_fields(spec)
    kind = spec['kind']
    num_tasks = _int(spec, 'num_tasks', None, 1)
    seed = _int(spec, 'seed', 0, 0)
    batch_size = _int(spec, 'batch_size', 64, 1)
    steps = _steps(spec, num_tasks)
    prefix = spec.get('name', 'task_')
    if not isinstance(prefix, str) or not prefix:
        raise _fail('name', f'expected a non-empty string prefix, got {prefix!r}.')
    base_transforms = list(spec.get('transforms') or ())
    if spec.get('num_classes') is not None:
        num_classes = _int(spec, 'num_classes', None, 1)
    else:
        num_classes = dataset_num_classes(spec, data_dir)
    base = {'dataset': spec['dataset']}
    train_split, test_split = spec.get('split') or 'train', spec.get('test_split') or 'test'

    if kind == 'domain':
        domain = spec.get('domain') or 'permute'
        if domain not in DOMAINS:
            raise _fail('domain', f'{domain!r} is not a domain shift; valid: {list(DOMAINS)}.')
        if domain == 'rotate' and num_tasks > 4:
            raise _fail('num_tasks', f'{num_tasks} rotated tasks asked for, but rotate turns by '
                        'quarter turns, so only 4 differ; give num_tasks <= 4 or '
                        "domain='permute'.")
        extra = [({'name': 'permute', 'seed': _task_seed(seed, t)} if domain == 'permute'
                  else {'name': 'rotate', 'k': t}) for t in range(num_tasks)]
        groups = [list(range(num_classes))] * num_tasks
    else:
        groups = _class_groups(spec, num_tasks, num_classes, seed)
        extra = [{'name': 'class_subset', 'classes': g} for g in groups]
    tasks = []
    for t in range(num_tasks):
        added = [extra[t]] + ([{'name': 'task_id', 'task': t}] if kind == 'task' else [])
        train = {**base, 'split': train_split, 'batch_size': batch_size,
                 'transforms': base_transforms + added}
        test = {**base, 'split': test_split, 'transforms': base_transforms + added}
        tasks.append(Task(name=f'{prefix}{t}', index=t, classes=tuple(groups[t]),
                          train=_copy(train), test=_copy(test), steps=steps[t]))
    return TaskStream(kind=kind, tasks=tuple(tasks), num_classes=num_classes)


def _task_seed(seed: int, task: int) -> int:
    """Task ``task``'s permutation seed: distinct per (seed, task), stable across runs."""
    return int(np.random.SeedSequence([seed, task]).generate_state(1)[0])
