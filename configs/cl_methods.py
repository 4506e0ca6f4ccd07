r"""Continual-learning methods beyond configs/continual.py: distillation, class-mean heads, joint.

Built on ``configs/continual.py`` (its variants, builders and EWC / L2 /
replay methods); each method changes the loss, the hooks and, for the
frozen-body heads, which parameters the later tasks train.

``:<variant>[,<method>][,pretrained][,active][,smoke]``:

* variant: ``split_digits`` (default), ``split_digits_task``, ``split_mnist1d``,
  ``permuted_digits`` (configs/continual.py).
* method (default ``ft``, fine-tuning): ``ewc``, ``l2``, ``replay`` (as in
  configs/continual.py); ``lwf`` (prediction distillation, lambda 1, T 2; class-
  and domain-incremental: the current model's softmax over every class the
  base loss scores against the old model's over the old classes, zero on
  the others, as van de Ven & Tolias; task-incremental: per finished task),
  ``feature`` (penultimate-feature distillation, lambda 0.1); ``nmc`` / ``lda``
  (class-mean heads) and ``linear`` (a linear head fine-tuned): the first
  task trains every parameter, later tasks only the last layer (the body is
  frozen), scored by the head (``nmc``, ``lda``) or the linear layer
  (``linear``); ``joint``: one phase over every task's training data (the
  upper bound; class-incremental variants only).
* ``pretrained``: the first task ("pre-training") holds digits 0-4, then
  class-incremental tasks {5, 6} and {7, 8, 9} (split_digits only).
* ``active`` (class-incremental only): the "expanding head" of van de Ven &
  Tolias: each task's loss runs its softmax over the classes of the tasks
  seen so far, not over every output
  (``alternating.continual.losses:active_classification``; its accuracy, which
  the matrix reports, is still the argmax over every output); every method.
* ``smoke``: a few dozen steps per task, a small MLP (seconds).

Command::

    python -m alternating.main --config=configs/cl_methods.py:split_digits,lwf --workdir=runs/lwf

Runtime and results: ``docs/results/cl_three_scenarios.md``, ``cl_rehearsal_free.md``
and ``cl_nmc.md`` (5 seeds each; 2-core CPU, tens of seconds per run).
"""

from alternating.data import tasks
from configs import continual

D = "alternating.continual.distill:"
H = "alternating.continual.heads:"
ACTIVE = "alternating.continual.losses:active_classification"
METHODS = ("ft", "joint", "lwf", "feature", "nmc", "lda", "linear") + continual.METHODS
LAMBDAS = {"lwf": 1.0, "feature": 0.1}
PRETRAINED = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]


def parse(arg):
    toks = [t for t in (arg or "").split(",") if t]
    bad = [t for t in toks if t not in continual.VARIANTS and t not in METHODS
           and t not in ("smoke", "pretrained", "active")]
    methods = [t for t in toks if t in METHODS]
    if bad or len(methods) > 1:
        raise ValueError(f"configs/cl_methods.py: bad option(s) {bad or methods}; give a variant "
                         f"of {sorted(continual.VARIANTS)}, at most one method of "
                         f"{list(METHODS)}, 'pretrained', 'active' and 'smoke'.")
    rest = ",".join(t for t in toks if t not in METHODS and t not in ("pretrained", "active"))
    variant, smoke, _ = continual.parse(rest)
    if "pretrained" in toks and variant != "split_digits":
        raise ValueError(f"configs/cl_methods.py: 'pretrained' needs variant split_digits, "
                         f"got {variant!r}.")
    if "active" in toks and continual.VARIANTS[variant]["kind"] != "class":
        raise ValueError(f"configs/cl_methods.py: 'active' is for class-incremental variants "
                         f"{[v for v, s in continual.VARIANTS.items() if s['kind'] == 'class']}, "
                         f"got {variant!r}.")
    return variant, smoke, (methods or ["ft"])[0], "pretrained" in toks, "active" in toks


def get_config(arg=None):
    variant, smoke, method, pretrained, active = parse(arg)
    c = continual.get_config(f"{variant},smoke" if smoke else variant)
    spec = dict(continual.VARIANTS[variant], seed=0, batch_size=c.data["task_0"]["batch_size"],
                steps_per_task=c.schedule["stages"][0][1])
    if pretrained:
        steps = spec["steps_per_task"]
        spec.update(num_tasks=3, classes_per_task=None, order=PRETRAINED,
                    steps_per_task=[2 * steps, steps, steps])
    stream = tasks.make_tasks(spec)
    shape = continual.INPUT_SHAPES[spec["dataset"]]
    c.total_steps, c.data, c.schedule = stream.total_steps, stream.data(), stream.schedule()
    base, kw = stream.default_loss()
    loss, kw, c.hooks = method_fields(stream, method, shape, c.model.features, base, kw)
    phases = stream.phases(loss=loss, loss_kwargs=kw, optimizer=dict(name="adam", lr=1e-3))
    if method in ("nmc", "lda", "linear"):  # the body is frozen after the first task
        last = f"Dense_{len(c.model.features) - 1}/.*"
        for name in stream.names[1:]:
            phases[name]["params"] = [(last, True), (".*", False)]
    c.phases, c.evaluators = joint(c, stream, phases) if method == "joint" else (
        phases, [stream.evaluator(batch_size=128)])
    if active:
        expanding_head(stream, c.phases)
    return c


def expanding_head(stream, phases):
    """Each phase's base loss scores only the classes of the tasks so far (``active``)."""
    seen = []
    for name, phase in phases.items():
        if name == "joint":
            seen = sorted(k for t in stream.tasks for k in t.classes)
        else:
            seen = sorted(set(seen) | set(stream.tasks[stream.names.index(name)].classes))
        kw = dict(phase["loss_kwargs"], active=list(seen))
        if phase["loss"] == "classification":
            phase["loss"] = ACTIVE
        elif kw.get("base") == "classification":
            kw["base"] = ACTIVE
        else:
            raise ValueError(f"configs/cl_methods.py: 'active' replaces the plain classification "
                             f"loss, but phase {name!r} has loss {phase['loss']!r} with base "
                             f"{kw.get('base')!r}.")
        phase["loss_kwargs"] = kw


def method_fields(stream, method, shape, features, base, kw):
    """``(loss, loss_kwargs, hooks)`` of a method (see the module docstring)."""
    data, n = stream.data(), stream.num_classes
    if method in continual.METHODS:
        return continual.method_fields(stream, method, shape)
    if method in ("lwf", "feature"):
        loss = D + ("lwf_classification" if method == "lwf" else "feature_distill_classification")
        extra = dict(temperature=2.0, softmax="old" if stream.kind == "task" else "active") if (
            method == "lwf") else {}
        hook = dict(name=D + "TaskSnapshot", tasks=data, num_classes=n)
        return loss, dict(base=base, lam=LAMBDAS[method], **extra, **kw), [hook]
    if method in ("nmc", "lda"):
        hook = dict(name=H + "ClassStatistics", tasks=data, num_classes=n, dim=features[-2],
                    head=method)
        return H + "head_classification", dict(base=base, **kw), [hook]
    if method == "joint" and stream.kind != "class":
        raise ValueError(f"configs/cl_methods.py: method 'joint' trains one phase over the "
                         f"union of the classes; valid variants for it: "
                         f"{[v for v, s in continual.VARIANTS.items() if s['kind'] == 'class']}.")
    return base, kw, []


def joint(c, stream, phases):
    """``(phases, evaluators)``: one phase over the union of the tasks' training data."""
    first = stream.tasks[0].train
    keep = [t for t in first.get("transforms", []) if t["name"] != "class_subset"]
    classes = sorted(k for t in stream.tasks for k in t.classes)
    c.data = {"joint": {**first, "transforms": keep + [dict(name="class_subset", classes=classes)]}}
    c.schedule = {"name": "sequential", "stages": [["joint", stream.total_steps]]}
    matrix = [{**t, "phase": "joint"} for t in stream.matrix_tasks()]
    return {"joint": {**phases["task_0"], "data": "joint"}}, [
        {**stream.evaluator(batch_size=128), "tasks": matrix}]
