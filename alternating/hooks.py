"""Hooks: user code the loop runs at declared moments, outside the jitted steps.

A hook is any callable object with

* ``when``: a :class:`~alternating.triggers.When` or a dict (``every``,
  ``steps``, ``start``, ``phase_end``, ``end``; see there);
* ``__call__(state, event, ctx) -> TrainState | None``: called after the
  steps of ``event.step``; a returned TrainState replaces the run's state;
* optionally ``name`` (default: its class or function name), ``extras``
  (``{name: extra spec}`` it needs in ``state.extras``, declared like
  ``config.extras``, e.g. ``{'fisher': {'kind': 'zeros'}}``), and
  ``state_dict()`` / ``load_state_dict(d)`` for host-side state to checkpoint.

What a hook may rely on:

* **Order.** After every step (or fused chunk) the loop runs schedule
  feedback, the log, hooks (in the order given), evaluators, the checkpoint
  and the stop check. A checkpoint therefore covers what a hook did at its
  step, and a resume reproduces a run with hooks bit for bit when the hook's
  results live in the state (or in its ``state_dict``).
* **No retrace.** A hook's returned state must have the structure, shapes and
  dtypes of the state it got. Before anything compiles, every hook is run
  once on the abstract state (``jax.eval_shape``) with a dry-run context, and
  a hook that changes the structure is refused there, by name. A hook that
  cannot be traced (it reads values on the host) is checked each time it
  returns a state instead, before the state is used.
* **Exact resume.** ``ctx.batches(spec)`` is a deterministic pass over a data
  spec, separate from the training streams, which a hook can never move.

``event`` is an :class:`Event`: ``step`` (steps done), ``phase`` (the phase
of the last step), ``ended`` (the phase whose run just ended, at a phase
end) and ``why`` (which parts of ``when`` fired).

Plain functions become hooks with :func:`hook`:
``hooks=[alternating.hooks.hook(fn, every=100)]``; configs name a hook class
or factory: ``config.hooks = [{'name': 'my.module:MyHook', 'when': {...},
**kwargs}]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax

from alternating import evaluation, parallel, registry
from alternating.triggers import When


@dataclasses.dataclass(frozen=True)
class Event:
    """The moment a hook or evaluator runs at."""

    step: int
    phase: str | None
    ended: str | None = None
    why: tuple[str, ...] = ()


class FunctionHook(registry.FunctionComponent):
    """A function ``fn(state, event, ctx)`` as a hook (see :func:`hook`)."""


def hook(fn: Callable, *, every: int = 0, steps: Sequence[int] = (), start: bool = False,
         phase_end: bool | str | Sequence[str] = False, end: bool = False,
         name: str | None = None, extras: Mapping[str, Any] | None = None) -> FunctionHook:
    """Makes ``fn(state, event, ctx) -> TrainState | None`` a hook with its ``when``."""
    pe = (phase_end,) if isinstance(phase_end, str) else (
        tuple(phase_end) if isinstance(phase_end, (list, tuple)) else bool(phase_end))
    return FunctionHook(fn, When(every=int(every), steps=tuple(steps), start=start,
                                 phase_end=pe, end=end), name=name, extras=extras)


def resolve_hook(spec: Any, where: str, **context) -> Any:
    """A hook from an object or ``{name, when, **kwargs}`` (name: registry or path)."""
    return registry.build(registry.HOOKS, spec, where, **context)


class _DryJit:
    """``ctx.jit``'s result: jitted and counted, or traced inline during a dry run."""

    def __init__(self, ctx: "Context", fn: Callable, name: str, kwargs: Mapping[str, Any]):
        self._ctx, self._fn = ctx, fn
        counted = ctx.counter.wrap(name, fn) if ctx.counter is not None else fn
        self._jitted = jax.jit(counted, **kwargs)

    def __call__(self, *args, **kwargs):
        if self._ctx.dry_run:
            return self._fn(*args, **kwargs)
        return self._jitted(*args, **kwargs)


class Context:
    """What hooks and evaluators may use; one per run (see the module docstring).

    Attributes:
      model, phases (bound), mesh, workdir, total_steps, data_dir: the run's.
      say: print to the run's console (process 0).
      dry_run: True while hooks are checked on the abstract state.
    """

    def __init__(self, *, model, phases, mesh, workdir, total_steps, data_dir, counter,
                 eval_sets, say, writer=None, replica: int | None = None):
        self.model, self.phases, self.mesh = model, phases, mesh
        self.workdir, self.total_steps, self.data_dir = workdir, total_steps, data_dir
        self.counter, self.eval_sets, self.say, self.writer = counter, eval_sets, say, writer
        self.replica = replica
        self.dry_run = False
        self._batches: dict[tuple[str, int], list] = {}

    def evaluate(self, state, sets: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """The run's evaluation sets (``evals``), or the named ones, on ``state``."""
        chosen = [e for e in self.eval_sets if sets is None or e.name in sets]
        if sets is not None:
            missing = sorted(set(sets) - {e.name for e in chosen})
            if missing:
                raise ValueError(f"ctx.evaluate: unknown evaluation set(s) {missing}; the "
                                 f"run's sets are {sorted(e.name for e in self.eval_sets)}.")
        if self.dry_run:
            return {e.name: {} for e in chosen}
        return evaluation.evaluate(chosen, state)

    def batches(self, data: Mapping[str, Any], batch_size: int = 256) -> list:
        """Every example of a data spec once, in order, padded (``mask``), on the devices.

        The same list every call (cached). During the dry run, only the first batch.
        """
        spec = dict(data.to_dict() if hasattr(data, "to_dict") else data)
        key = (repr(sorted(spec.items())), int(batch_size))
        if key not in self._batches:
            parallel.check_batch_size(batch_size, self.mesh, "ctx.batches")
            # Placed eagerly even when first asked for inside the dry run's
            # trace: a traced batch in the cache would break every later call.
            with jax.ensure_compile_time_eval():
                self._batches[key] = evaluation.device_batches(spec, batch_size, self.mesh,
                                                               self.data_dir)
        out = self._batches[key]
        return out[:1] if self.dry_run else out

    def jit(self, fn: Callable, name: str, **jit_kwargs) -> Callable:
        """``jax.jit(fn)``, its compiles counted in ``results.json`` as ``name``."""
        return _DryJit(self, fn, name, jit_kwargs)

    def write(self, step: int, name: str, scalars: Mapping[str, Any]) -> None:
        """Writes an evaluation-style row ``name`` at ``step`` (JSONL and TensorBoard)."""
        if self.writer is not None and not self.dry_run:
            self.writer.write_eval(step, name, scalars)


def same_structure(old: Any, new: Any) -> list[str]:
    """Differences in tree structure, shapes and dtypes (empty: the same)."""
    if jax.tree.structure(old) != jax.tree.structure(new):
        a = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(old)}
        b = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(new)}
        out = [f"added {p}" for p in sorted(b - a)[:5]] + [f"removed {p}" for p in sorted(a - b)[:5]]
        return out or ["the tree structure differs (containers or field types)"]
    out = []
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(old), jax.tree.leaves(new)):
        if tuple(x.shape) != tuple(y.shape) or x.dtype != y.dtype:
            out.append(f"{jax.tree_util.keystr(path)}: {x.dtype}{list(x.shape)} -> "
                       f"{y.dtype}{list(y.shape)}")
    return out[:10]


def unalias(state: Any) -> Any:
    """``state`` with every leaf that shares a buffer with an earlier leaf copied.

    A hook may return a state whose leaves alias each other (e.g. an extra set
    to ``state.params``); the next step donates every leaf, and XLA refuses to
    donate one buffer twice.
    """
    seen: set = set()

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        keys = {id(x)}
        try:
            keys |= {s.data.unsafe_buffer_pointer() for s in x.addressable_shards}
        except Exception:  # pylint: disable=broad-except
            pass
        if keys & seen:
            return x.copy()
        seen.update(keys)
        return x

    return jax.tree.map(one, state)


def structure_error(name: str, diff: Sequence[str]) -> ValueError:
    return ValueError(
        f"hook {name!r} returned a TrainState of another structure than it got:\n  "
        + "\n  ".join(diff) + "\nThe state's structure is fixed (a change would recompile every "
        "step): declare what the hook stores as extras (hook.extras or config.extras) and "
        "return arrays of the same shapes and dtypes.")


def check_hooks(hooks: Sequence[Any], abstract_state: Any, ctx: Context) -> set[str]:
    """Runs every hook on the abstract state; refuses one that changes the structure.

    Returns:
      The names of hooks that could not be traced (checked at run time).

    Raises:
      ValueError: a hook returned another structure, naming the hook.
    """
    untraced = set()
    ctx.dry_run = True
    try:
        for h in hooks:
            event = Event(step=0, phase=None, why=("check",))
            try:
                out = jax.eval_shape(lambda s, h=h: h(s, event, ctx), abstract_state)
            except Exception:  # pylint: disable=broad-except
                untraced.add(h.name)  # reads values on the host: checked when it returns
                continue
            if out is not None:
                diff = same_structure(abstract_state, out)
                if diff:
                    raise structure_error(h.name, diff)
    finally:
        ctx.dry_run = False
    return untraced
