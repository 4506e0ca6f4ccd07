r"""Continual learning on task streams: one phase per task, trained in sequence.

The three scenarios of van de Ven & Tolias (2019), each a task spec expanded by
``alternating.data.tasks.make_tasks`` into the data streams, one phase per
task (same loss, every parameter shared, a fresh Adam state per task), a
``sequential`` schedule and the accuracy-matrix evaluator
(``alternating.continual.matrix.AccuracyMatrix``: R[i][j], ACC, BWT, FWT,
forgetting, in ``results.json`` under ``continual`` and drawn in
``accuracy_matrix.png``). This is plain fine-tuning, the baseline every
continual-learning method is measured against.

Variants (``:<variant>[,<method>][,smoke]``):

* ``split_digits`` (default): digits, 5 tasks of 2 classes (0/1, 2/3, ...),
  class-incremental: labels are global and the model is never told the task.
* ``split_digits_task``: the same tasks, task-incremental: every example
  carries its task id and the softmax runs over its task's classes only.
* ``split_mnist1d``: MNIST-1D, 5 tasks of 2 classes, class-incremental.
* ``permuted_digits``: digits, 10 tasks, each a fixed pixel permutation of
  the whole dataset (domain-incremental).
* methods (default: fine-tuning): ``ewc`` (diagonal-Fisher penalty to the
  previous task's parameters, lambda 1000), ``l2`` (the same with importance
  1, lambda 1) and ``replay`` (a 200-example reservoir memory filled at task
  ends, 32 replayed examples a step); see docs/continual.md, Methods.
* ``smoke``: a few dozen steps per task and a smaller MLP (seconds; tests).

Command::

    python -m alternating.main --config=configs/continual.py:split_digits --workdir=runs/cl

Expected (seed 0, MLP 64-128-128-10, Adam 1e-3, batch 64, 300 steps a task;
measured on a shared 2-core CPU, 9-38 s a run; twice, the same numbers)::

    variant             ACC    BWT     forgetting  FWT     learning accuracy
    split_digits        0.200  -0.997  0.997       -0.108  0.99-1.00
    split_digits_task   0.972  -0.028  0.028        0.088  0.99-1.00
    split_mnist1d       0.150  -0.887  0.887       -0.054  0.73-0.97
    permuted_digits     0.318  -0.707  0.707        0.003  0.95-0.96

Class-incremental fine-tuning learns every task and then predicts only the
last task's classes (ACC about 1/T); told the task, the same training keeps
almost everything; permuted tasks keep part of the earlier ones. Single-seed
figures of the baseline, not claims about any method (see docs/continual.md).
"""

from alternating.data import tasks
from alternating.experiment import base_config

VARIANTS = {
    "split_digits": dict(kind="class", dataset="digits", num_tasks=5, classes_per_task=2,
                         order=list(range(10))),
    "split_digits_task": dict(kind="task", dataset="digits", num_tasks=5, classes_per_task=2,
                              order=list(range(10))),
    "split_mnist1d": dict(kind="class", dataset="mnist1d", num_tasks=5, classes_per_task=2,
                          order=list(range(10))),
    "permuted_digits": dict(kind="domain", dataset="digits", num_tasks=10, domain="permute"),
}
INPUT_SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1)}
METHODS = ("ewc", "l2", "replay")  # none: fine-tuning
LAMBDAS = {"ewc": 1000.0, "l2": 1.0}
REG = "alternating.continual.regularizers:"


def parse(arg):
    toks = [t for t in (arg or "").split(",") if t]
    bad = [t for t in toks if t not in VARIANTS and t not in METHODS and t != "smoke"]
    chosen = [t for t in toks if t in VARIANTS]
    methods = [t for t in toks if t in METHODS]
    if bad or len(chosen) > 1 or len(methods) > 1:
        raise ValueError(f"configs/continual.py: bad variant(s) {bad or chosen or methods}; give "
                         f"one of {sorted(VARIANTS)}, optionally one method of {list(METHODS)} "
                         "and ',smoke'.")
    return (chosen[0] if chosen else "split_digits"), "smoke" in toks, (methods or [None])[0]


def method_fields(stream, method, input_shape):
    """``(loss, loss_kwargs, hooks)`` of a method (docs/continual.md, Methods)."""
    base, base_kwargs = stream.default_loss()
    if method is None:
        return base, base_kwargs, []
    if method == "replay":
        hook = dict(name="alternating.continual.replay:ReplayMemory", tasks=stream.data(),
                    size=200, x_shape=list(input_shape), task=stream.kind == "task")
        return ("alternating.continual.replay:replay_classification",
                dict(base=base, batch_size=32, **base_kwargs), [hook])
    hook = dict(name=REG + "TaskAnchor", tasks=stream.data(), mode=method, gamma=1.0)
    return REG + "ewc_classification", dict(base=base, lam=LAMBDAS[method], **base_kwargs), [hook]


def get_config(arg=None):
    variant, smoke, method = parse(arg)
    spec = dict(VARIANTS[variant], seed=0, batch_size=64 if not smoke else 32,
                steps_per_task=60 if smoke else 300)
    stream = tasks.make_tasks(spec)
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = stream.total_steps
    c.log_every_steps = 20 if smoke else 100
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    hidden = 64 if smoke else 128
    c.model = dict(name="mlp", features=(64, hidden, stream.num_classes) if smoke
                   else (64, hidden, hidden, stream.num_classes),
                   input_shape=INPUT_SHAPES[spec["dataset"]])
    c.data = stream.data()
    loss, loss_kwargs, c.hooks = method_fields(stream, method, INPUT_SHAPES[spec["dataset"]])
    c.phases = stream.phases(loss=loss, loss_kwargs=loss_kwargs,
                             optimizer=dict(name="adam", lr=1e-3))
    c.schedule = stream.schedule()
    c.evaluators = [stream.evaluator(batch_size=128)]
    return c
