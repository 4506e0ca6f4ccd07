r"""The accuracy matrix of a task stream, and the metrics read from it.

With tasks :math:`0..T-1` trained in order, :math:`R_{i,j}` is the test
accuracy on task :math:`j` after training task :math:`i`, and :math:`b_j` the
test accuracy on task :math:`j` before any training (the ``initial`` row).
With :math:`k` rows (:math:`k = T` once every task has been trained):

* ``acc`` (average accuracy, Lopez-Paz & Ranzato, "Gradient Episodic Memory
  for Continual Learning", NeurIPS 2017):
  :math:`\mathrm{ACC} = \frac{1}{T} \sum_{j=0}^{T-1} R_{k-1,j}`, the mean of
  the last row.
* ``bwt`` (backward transfer, same paper):
  :math:`\mathrm{BWT} = \frac{1}{k-1} \sum_{j=0}^{k-2} (R_{k-1,j} - R_{j,j})`;
  negative when training later tasks lowered the accuracy on earlier ones.
* ``fwt`` (forward transfer, same paper):
  :math:`\mathrm{FWT} = \frac{1}{m} \sum_{j=1}^{m} (R_{j-1,j} - b_j)` with
  :math:`m = \min(k, T-1)`: the accuracy on a task just before it is trained,
  against the untrained model's.
* ``forgetting`` (Chaudhry et al., "Riemannian Walk for Incremental
  Learning", ECCV 2018): :math:`f_j = \max_{l \in \{0..k-2\}} R_{l,j} -
  R_{k-1,j}` for :math:`j < k-1`, and
  :math:`F = \frac{1}{k-1} \sum_{j=0}^{k-2} f_j`; never below :math:`-\mathrm{BWT}`.
* ``learning_accuracy``: :math:`[R_{0,0}, R_{1,1}, ...]`, each task's accuracy
  right after it was trained.

``bwt`` and ``forgetting`` need two rows, ``fwt`` the initial row and a
second task; each is ``None`` without them. The per-task metrics need the
rows in task order (row ``i`` after task ``i``'s phase); when a schedule
ends the task phases in another order they are ``None`` and ``acc`` is still
the mean of the last row.

:class:`AccuracyMatrix` is the evaluator that fills the matrix during a run:
a row before training (``start``) and one at the end of every task's phase
(``phase_end``), each task's accuracy computed exactly over its padded test
set with that task's phase loss (its aux ``accuracy``), in one jitted function
for every task. Its rows are kept in checkpoints (``state_dict``), so a run
resumed mid-stream ends with the same matrix. Optionally it also evaluates
every ``dense_every`` steps (the ``<name>_dense`` rows), which shows the dip
of old tasks' accuracy right after a task switch (the "stability gap", De
Lange, van de Ven & Tuytelaars, ICLR 2023).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, parallel, registry


def continual_metrics(matrix: Sequence[Sequence[float]],
                      initial: Sequence[float] | None = None) -> dict[str, Any]:
    """ACC, BWT, FWT, forgetting and learning accuracy of a ``k x T`` matrix (see the module).

    Args:
      matrix: ``matrix[i][j]``: accuracy on task ``j`` after training task
        ``i``; ``k <= T`` rows of ``T`` values, row ``i`` after task ``i``.
      initial: accuracy on each task before training (for ``fwt``), or None.

    Returns:
      ``{acc, bwt, fwt, forgetting, learning_accuracy}``; a metric that the
      rows do not define is ``None``.

    Raises:
      ValueError: an empty matrix, ragged rows, more rows than tasks, or an
        initial row of another length.
    """
    r = np.asarray(matrix, np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"continual_metrics: expected a non-empty k x T matrix, got shape "
                         f"{r.shape}.")
    k, t = r.shape
    if k > t:
        raise ValueError(f"continual_metrics: {k} rows for {t} tasks; row i must be the "
                         "accuracies after training task i.")
    b = None if initial is None else np.asarray(initial, np.float64)
    if b is not None and b.shape != (t,):
        raise ValueError(f"continual_metrics: initial has {b.size} values for {t} tasks.")
    last = r[k - 1]
    out: dict[str, Any] = {"acc": float(last.mean()), "bwt": None, "fwt": None,
                           "forgetting": None,
                           "learning_accuracy": [float(r[i, i]) for i in range(k)]}
    if k >= 2:
        old = np.arange(k - 1)
        out["bwt"] = float(np.mean(last[old] - r[old, old]))
        out["forgetting"] = float(np.mean(r[:k - 1, :k - 1].max(axis=0) - last[:k - 1]))
    m = min(k, t - 1)
    if b is not None and m >= 1:
        j = np.arange(1, m + 1)
        out["fwt"] = float(np.mean(r[j - 1, j] - b[j]))
    return out


def _task(spec: Any, i: int) -> dict[str, Any]:
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    unknown = sorted(set(spec) - {"name", "data", "phase"})
    if unknown or "data" not in spec:
        raise ValueError(f"AccuracyMatrix tasks[{i}]: expected {{name, data, phase}} (phase "
                         f"defaults to name), got keys {sorted(spec)}.")
    name = str(spec.get("name") or spec.get("phase") or f"task_{i}")
    return {"name": name, "data": dict(spec["data"]), "phase": str(spec.get("phase") or name)}


class AccuracyMatrix:
    """Evaluator: the accuracy matrix of a task stream and its metrics (see the module).

    Args:
      tasks: ``[{name, data, phase}]`` in training order: each task's test
        data spec and the phase whose loss (aux ``accuracy``) scores it;
        ``TaskStream.matrix_tasks()`` gives them.
      batch_size: evaluation batch size (a multiple of the device count).
      dense_every: > 0 also evaluates every task every that many steps.
      name: the evaluator's name (rows, checkpoints); its summary key is
        ``continual`` under the default name, else the name.
      plot: write ``<workdir>/accuracy_matrix.png`` (``<name>.png`` under
        another name) when the run ends.
    """

    name = "accuracy_matrix"

    def __init__(self, tasks: Sequence[Any], batch_size: int = 128, dense_every: int = 0,
                 name: str | None = None, plot: bool = True):
        if not tasks:
            raise ValueError("AccuracyMatrix: tasks is empty; give [{name, data, phase}, ...].")
        self.tasks = [_task(t, i) for i, t in enumerate(tasks)]
        names = [t["name"] for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"AccuracyMatrix: task names must be unique, got {names}.")
        self.batch_size, self.dense_every = int(batch_size), int(dense_every)
        if name:
            self.name = str(name)
        self.plot = bool(plot)
        phases = list(dict.fromkeys(t["phase"] for t in self.tasks))
        self.when = {"start": True, "phase_end": phases, "every": self.dense_every}
        self._fn = None
        self._branch: list[int] = []
        self._workdir: str | None = None
        self._data: dict[int, dict[str, Any]] = {}
        self._last_event: Any = None
        self._calls = 0

    # --- Evaluation ---------------------------------------------------------------------

    def _build(self, ctx: Any) -> None:
        """One jitted function for every task: a ``lax.switch`` over the tasks' losses."""
        by_name = {p.name: p for p in ctx.phases}
        missing = sorted({t["phase"] for t in self.tasks} - set(by_name))
        if missing:
            raise ValueError(f"evaluator {self.name!r}: tasks name phase(s) {missing}; the "
                             f"phases are {sorted(by_name)}.")
        fns: list[Any] = []
        for t in self.tasks:
            loss_fn = by_name[t["phase"]].loss_fn
            if loss_fn not in fns:
                fns.append(loss_fn)
            self._branch.append(fns.index(loss_fn))
        branches = [_per_example_accuracy(f, self.name) for f in fns]

        def fn(branch, params, extras, batch, step):
            return jax.lax.switch(branch, branches, params, extras, batch, step)

        self._fn = ctx.jit(fn, f"eval:{self.name}")

    def evaluate(self, state: Any, ctx: Any) -> list[float]:
        """Each task's test accuracy on ``state``, exact over its examples."""
        if self._fn is None:
            self._build(ctx)
        sums = []
        for j, task in enumerate(self.tasks):
            total = count = None
            for batch in ctx.batches(task["data"], self.batch_size):
                s, n = self._fn(np.int32(self._branch[j]), state.params, state.extras, batch,
                                state.step)
                total, count = (s, n) if total is None else (total + s, count + n)
                parallel.bound_queue(total)
            sums.append((total, count))
        host = parallel.get(sums)
        return [float(s) / max(float(n), 1.0) for s, n in host]

    def __call__(self, state: Any, event: Any, ctx: Any) -> dict[str, dict[str, float]] | None:
        if getattr(ctx, "dry_run", False):
            return None
        self._workdir = ctx.workdir
        data = self._replica(self._replica_index(event, ctx))
        acc = self.evaluate(state, ctx)
        by_task = {t["name"]: a for t, a in zip(self.tasks, acc)}
        rows: dict[str, dict[str, float]] = {}
        why = set(event.why)
        if "start" in why:
            data["initial"] = acc
            rows[self.name] = dict(by_task)
        if "phase_end" in why and event.ended is not None:
            data["rows"].append({"after": event.ended, "step": int(event.step), "acc": acc})
            seen = [a for t, a in zip(self.tasks, acc)
                    if t["phase"] in {r["after"] for r in data["rows"]}]
            rows[self.name] = {**by_task, "mean_seen": float(np.mean(seen)) if seen else 0.0}
        if why - {"start", "phase_end"}:
            data["dense"].append({"step": int(event.step), "acc": acc})
            rows[f"{self.name}_dense"] = dict(by_task)
        return rows

    def _replica_index(self, event: Any, ctx: Any) -> int:
        """Which seed's rows a call fills: ``ctx.replica`` where the loop sets it; else
        vectorized seeds are told apart by order (each event calls seed 0, 1, ... in turn)."""
        key = (event.step, tuple(event.why), event.ended)
        self._calls = self._calls + 1 if key == self._last_event else 0
        self._last_event = key
        replica = getattr(ctx, "replica", None)
        return int(replica) if replica is not None else self._calls

    def _replica(self, i: int) -> dict[str, Any]:
        if i not in self._data:
            self._data[i] = {"initial": None, "rows": [], "dense": []}
        return self._data[i]

    # --- Results and checkpoints --------------------------------------------------------

    def entry(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The summary of one replica's rows: the matrix, its metrics, the dense rows."""
        names = [t["name"] for t in self.tasks]
        rows = list(data.get("rows") or [])
        matrix = [list(r["acc"]) for r in rows]
        out: dict[str, Any] = {"tasks": names, "matrix": matrix, "initial": data.get("initial"),
                               "after": [r["after"] for r in rows],
                               "row_steps": [r["step"] for r in rows]}
        in_order = 0 < len(rows) <= len(names) and all(
            r["after"] == self.tasks[i]["phase"] for i, r in enumerate(rows))
        metrics = {"acc": None, "bwt": None, "fwt": None, "forgetting": None,
                   "learning_accuracy": []}
        if in_order:
            metrics = continual_metrics(matrix, data.get("initial"))
        elif rows:
            metrics["acc"] = float(np.mean(matrix[-1]))
        out.update(metrics)
        dense = list(data.get("dense") or [])
        if dense:
            out["dense"] = {"steps": [d["step"] for d in dense],
                            "accuracy": [list(d["acc"]) for d in dense]}
        return out

    def summary(self) -> dict[str, Any]:
        replicas = sorted(self._data)
        if len(replicas) <= 1:
            out = self.entry(self._data.get(replicas[0] if replicas else 0, {}))
        else:
            out = self.entry(_mean_replica([self._data[i] for i in replicas]))
            out["per_seed"] = [self.entry(self._data[i]) for i in replicas]
        if self.plot and self._workdir and out["matrix"] and jax.process_index() == 0:
            filename = ("accuracy_matrix" if self.name == AccuracyMatrix.name else self.name)
            plot_matrix(self._workdir, out["matrix"], tasks=out["tasks"],
                        initial=out["initial"], filename=f"{filename}.png")
        return {"continual" if self.name == AccuracyMatrix.name else self.name: out}

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": [t["name"] for t in self.tasks],
                "replicas": {str(i): d for i, d in self._data.items()}}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        names = [t["name"] for t in self.tasks]
        if saved.get("tasks") is not None and list(saved["tasks"]) != names:
            raise ValueError(f"evaluator {self.name!r}: the checkpoint's matrix has tasks "
                             f"{list(saved['tasks'])}, this run {names}; resume with the same "
                             "tasks, or give this evaluator another name.")
        self._data = {int(i): {"initial": d.get("initial"), "rows": list(d.get("rows") or []),
                               "dense": list(d.get("dense") or [])}
                      for i, d in (saved.get("replicas") or {}).items()}


def _per_example_accuracy(loss_fn: Any, name: str) -> Any:
    """``(params, extras, batch, step) -> (sum of accuracy over real examples, count)``.

    The loss runs on each example as a batch of one (``vmap``), so the result
    is exact whatever the loss does with padding: ``sum(acc * mask)``.
    """
    loss_fn = losses.with_step(loss_fn)
    rng = jax.random.PRNGKey(0)

    def run(params, extras, batch, step):
        mask = batch["mask"]
        examples = {k: v for k, v in batch.items() if k != "mask"}
        info = losses.StepInfo(step, jnp.zeros((), jnp.int32))

        def one(example):
            _, aux = loss_fn(params, jax.tree.map(lambda v: v[None], example), rng, extras, info)
            aux = losses.metrics_of(aux)
            if "accuracy" not in aux:
                raise ValueError(f"evaluator {name!r}: the task's loss reports no 'accuracy' "
                                 f"(its aux has {sorted(aux)}); use a classification loss.")
            return jnp.asarray(aux["accuracy"], jnp.float32)

        acc = jax.vmap(one)(examples).reshape(mask.shape)
        return (acc * mask).sum(), mask.sum()

    return run


def _mean_replica(datas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One replica's rows averaged over seeds (rows present in every seed)."""
    def mean(xs):
        return np.mean(np.asarray(xs, np.float64), axis=0).tolist()

    k = min(len(d["rows"]) for d in datas)
    rows = [{**datas[0]["rows"][i], "acc": mean([d["rows"][i]["acc"] for d in datas])}
            for i in range(k)]
    initial = (mean([d["initial"] for d in datas])
               if all(d.get("initial") is not None for d in datas) else None)
    n = min(len(d["dense"]) for d in datas)
    dense = [{**datas[0]["dense"][i], "acc": mean([d["dense"][i]["acc"] for d in datas])}
             for i in range(n)]
    return {"initial": initial, "rows": rows, "dense": dense}


def plot_matrix(workdir: str | os.PathLike[str], matrix: Sequence[Sequence[float]], *,
                tasks: Sequence[str] | None = None, initial: Sequence[float] | None = None,
                filename: str = "accuracy_matrix.png") -> pathlib.Path:
    """Draws the accuracy matrix as an annotated heatmap, ``<workdir>/<filename>``.

    Rows are "after training task i" (the untrained model's row first, when
    ``initial`` is given), columns the tasks tested. Rendered with the Agg
    canvas, never through ``pyplot`` (as :mod:`alternating.plots`).
    """
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    # pylint: enable=g-import-not-at-top
    r = np.asarray(matrix, np.float64)
    t = r.shape[1]
    tasks = list(tasks) if tasks is not None else [f"task {j}" for j in range(t)]
    labels = [f"after {tasks[i]}" if i < len(tasks) else f"row {i}" for i in range(len(r))]
    if initial is not None:
        r = np.vstack([np.asarray(initial, np.float64)[None], r])
        labels = ["untrained"] + labels
    fig = Figure(figsize=(1.2 + 0.7 * t, 1.0 + 0.5 * len(r)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(r, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(r):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                color="white" if v < 0.6 else "black")
    ax.set_xticks(range(t), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(r)), labels)
    ax.set_xlabel("tested on")
    ax.set_title("accuracy matrix")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    out = pathlib.Path(workdir) / filename
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


registry.EVALUATORS.register("accuracy_matrix", AccuracyMatrix)
