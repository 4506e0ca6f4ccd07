r"""Model merging and the infinite learning-rate schedule on permuted digits.

Built on ``configs/continual.py``'s ``permuted_digits`` stream (domain-
incremental: each task a fixed pixel permutation of digits, labels shared).

Variants (``:<variant>[,smoke]``):

* ``merge`` (default): a ``pretrain`` phase on the plain digits, then 4
  permuted tasks, each fine-tuned from the pre-trained parameters (hook
  ``TaskSnapshots`` with ``reset``: every task starts from the same start,
  as in the AdaMerging paper); at the end the evaluator ``merge`` merges the
  4 fine-tuned models by weight averaging, task arithmetic (lambda 0.3) and
  AdaMerging task-wise and layer-wise, and writes each one's accuracy on the
  4 tasks to ``results.json`` (``merge``).
* ``cosine``: 5 tasks, repeated cosine: each task's own Adam state, warm-up
  then cosine decay to 0.1 x lr within the task (the library's default: a
  phase's schedule counts its own steps).
* ``cosine_shared``: the same repeated cosine over one Adam state shared by
  the tasks (``optimizer_group``; ``cycle_steps`` restarts the schedule at
  each task).
* ``infinite``: one Adam state shared by the tasks and the infinite schedule
  over their steps: warm-up, cosine cool-down to 0.5 x lr, constant, and an
  exponential anneal to 0.1 x lr over the last 20% of every task, where the
  accuracy matrix takes its row.
* ``smoke``: 20 steps per task (seconds; tests).

Command::

    python -m alternating.main --config=configs/cl_merge.py:merge --workdir=runs/merge

Expected: docs/results/cl_adamerging.md and docs/results/cl_infinite_lr.md
(5 seeds each; a run takes tens of seconds on a 2-core CPU).
"""

from configs import continual

VARIANTS = ("merge", "cosine", "cosine_shared", "infinite")
M = "alternating.continual.merging:"
LR, WARMUP = 1e-3, 0.1  # peak lr; warm-up as a fraction of a task (infinite: of task 0)


def parse(arg):
    toks = [t for t in (arg or "").split(",") if t]
    bad = [t for t in toks if t not in VARIANTS and t != "smoke"]
    chosen = [t for t in toks if t in VARIANTS]
    if bad or len(chosen) > 1:
        raise ValueError(f"configs/cl_merge.py: bad variant(s) {bad or chosen}; give one of "
                         f"{list(VARIANTS)} and optionally ',smoke'.")
    return (chosen or ["merge"])[0], "smoke" in toks


def _head(spec, t, split=None):
    """A data spec relabelled to head ``t`` (classes 10t..10t+9), with its task id."""
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec, **({"split": split} if split else {}))
    relabel = dict(name="relabel", mapping=[10 * t + c for c in range(10)])
    spec["transforms"] = list(spec.get("transforms") or []) + [relabel, dict(name="task_id", task=t)]
    return spec


def merge_config(smoke):
    """Pre-training on digits, 4 permuted tasks fine-tuned from it, merged at the end.

    Each task has its own 10-way head (rows 10t..10t+9 of one output layer, the
    softmax masked to them); pre-training has a fifth (rows 40..49).
    """
    c = continual.get_config("permuted_digits" + (",smoke" if smoke else ""))
    tasks, steps = list(c.phases.keys())[:4], (20 if smoke else 150)
    tests = [e["data"] for e in c.evaluators[0]["tasks"][:4]]
    plain = dict(dataset="digits", split="train", batch_size=c.data[tasks[0]].batch_size)
    c.data = {**{t: _head(c.data[t], i) for i, t in enumerate(tasks)}, "pretrain": _head(plain, 4)}
    c.model.features = tuple(c.model.features[:-1]) + (50,)
    heads = [list(range(10 * t, 10 * t + 10)) for t in range(5)]
    phase = dict(loss="alternating.continual.losses:task_masked_classification",
                 loss_kwargs=dict(classes=heads), optimizer=dict(name="adam", lr=1e-3))
    c.phases = {t: dict(phase, data=t) for t in ["pretrain"] + tasks}
    c.schedule = dict(name="sequential", stages=[["pretrain", 2 * steps]] + [[t, steps] for t in tasks])
    c.total_steps = 6 * steps
    c.hooks = [dict(name=M + "TaskSnapshots", tasks=tasks, reset=True, base_phase="pretrain")]
    ada = dict(steps=50 if smoke else 500, lr=1e-3, batch_size=16, init=0.3)
    c.evaluators = [dict(name=M + "MergeEvaluator", classes=heads[:4], methods=[
        dict(name="average"), dict(name="task_arithmetic", lam=0.3),
        dict(name="adamerging", granularity="task", **ada),
        dict(name="adamerging", granularity="layer", **ada)],
        tasks=[dict(name=t, data=_head(d, i)) for i, (t, d) in enumerate(zip(tasks, tests))])]
    return c


def schedule_config(variant, smoke):
    """5 permuted tasks in sequence under one learning-rate schedule arm."""
    c = continual.get_config("permuted_digits" + (",smoke" if smoke else ""))
    names = list(c.phases.keys())
    for name in names[5:]:
        del c.phases[name], c.data[name]
    steps = 20 if smoke else c.schedule.stages[0][1]
    c.schedule.stages = [[n, steps] for n, _ in c.schedule.stages[:5]]
    c.total_steps = 5 * steps
    c.evaluators[0]["tasks"] = c.evaluators[0]["tasks"][:5]
    opt = dict(name="adam", lr=LR, warmup_steps=int(WARMUP * steps), end_lr_factor=0.1)
    if variant in ("cosine", "cosine_shared"):
        opt.update(schedule="cosine", decay_steps=steps)
    if variant == "cosine_shared":
        opt["cycle_steps"] = steps
    if variant == "infinite":
        opt.update(schedule="infinite", cooldown_steps=steps // 2, const_lr_factor=0.5,
                   anneal_steps=steps // 5, anneal_at=[steps * (i + 1) for i in range(5)])
    for name in names[:5]:
        c.phases[name].optimizer = opt
        if variant != "cosine":
            c.phases[name].optimizer_group = "tasks"
    return c


def get_config(arg=None):
    variant, smoke = parse(arg)
    return merge_config(smoke) if variant == "merge" else schedule_config(variant, smoke)
