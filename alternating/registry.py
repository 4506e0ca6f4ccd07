"""One registry for every name a config can use.

Losses, schedules, models, extras update rules, hooks, evaluators and
augmentations are each
named the same three ways, resolved by :meth:`Registry.resolve`:

* a registered name (``'classification'``, ``'alternate'``, ``'mlp'``);
* ``'package.module:attr'``: any importable attribute, so a config can name a
  user's own loss, schedule, model, rule, hook or evaluator from a module
  outside this package (the module registers nothing; importing it is enough);
* the object itself (Python callers).

Paper-specific code lives in :mod:`alternating.schemes`, whose modules register
their own names. Those modules are imported the first time a name is not
found, so the package root never imports them just to fill the tables.

Every registry gives the same error text: the field at fault, the name, the
valid names and the ``module:attr`` form.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Mapping

from alternating.triggers import parse_when

# Modules imported on the first miss, for the names they register.
_LAZY_MODULES = ("alternating.schemes", "alternating.continual")
_lazy_loaded = False


def import_attr(path: str, where: str) -> Any:
    """``'package.module:attr'`` -> the attribute (dots in ``attr`` walk into it).

    Raises:
      ValueError: naming ``where``, the path and why it failed.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{where}={path!r}: expected 'package.module:attr'.")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{where}: cannot import {path!r}: {e} (is the module on PYTHONPATH? "
                         "Run from the directory that holds it).") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ValueError(f"{where}: cannot import {path!r}: module {module_name!r} has no "
                             f"attribute {attr!r}.") from e
    return obj


def _load_lazy() -> None:
    global _lazy_loaded
    if not _lazy_loaded:
        _lazy_loaded = True
        for name in _LAZY_MODULES:
            importlib.import_module(name)


class Registry:
    """Names of one kind of thing (``kind``: 'loss', 'schedule', 'model', ...).

    Behaves as a read-only mapping ``{name: registered object}``.

    Args:
      kind: what is registered, for error messages.
      label: how the error calls a valid one (default ``'registered <kind>'``).
      accepts: ``accepts(obj) -> bool`` for an object given directly (not a
        name); default: anything that is not a string.
    """

    def __init__(self, kind: str, accepts: Callable[[Any], bool] | None = None,
                 label: str | None = None):
        self.kind = kind
        self.label = label or f"registered {kind}"
        self._items: dict[str, Any] = {}
        self._accepts = accepts or (lambda obj: not isinstance(obj, str))

    def register(self, name: str, obj: Any = None, *, replace: bool = False):
        """Registers ``obj`` under ``name``; without ``obj``, a decorator.

        Raises:
          ValueError: ``name`` is taken (pass ``replace=True`` to override).
        """
        def deco(o):
            if name in self._items and not replace and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is already registered.")
            self._items[name] = o
            return o
        return deco if obj is None else deco(obj)

    def names(self) -> list[str]:
        """Every registered name (scheme modules included), sorted."""
        _load_lazy()
        return sorted(self._items)

    def __contains__(self, name: Any) -> bool:
        if name not in self._items:
            _load_lazy()
        return name in self._items

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def get(self, name: str, default: Any = None) -> Any:
        return self._items[name] if name in self else default

    def items(self):
        return [(n, self._items[n]) for n in self.names()]

    def error(self, where: str, spec: Any) -> ValueError:
        """The one error text for a name that resolves to nothing."""
        return ValueError(f"{where}={spec!r} is not a {self.label}; valid names: "
                          f"{self.names()}, or 'package.module:attr' naming your own.")

    def resolve(self, spec: Any, where: str) -> Any:
        """A name, ``'package.module:attr'`` or an object -> the object.

        Raises:
          ValueError: an unknown name, an unimportable path, or an object of
            the wrong kind, naming ``where`` and the valid names.
        """
        if isinstance(spec, str):
            if ":" in spec:
                return import_attr(spec, where)
            if spec in self:
                return self._items[spec]
            raise self.error(where, spec)
        if spec is not None and self._accepts(spec):
            return spec
        raise ValueError(f"{where}: expected a {self.kind} name, 'package.module:attr' or a "
                         f"{self.kind} object, got {spec!r}; valid names: {self.names()}.")


LOSSES = Registry("loss", accepts=callable)
SCHEDULES = Registry("schedule", label="schedule")
MODELS = Registry("model", label="model")
RULES = Registry("extras update rule", accepts=callable)
HOOKS = Registry("hook")
EVALUATORS = Registry("evaluator")
AUGMENTS = Registry("augmentation", accepts=callable)


class FunctionComponent:
    """A function ``fn(state, event, ctx)`` with a ``when`` and a ``name`` (a hook or evaluator)."""

    def __init__(self, fn: Callable, when: Any = None, name: str | None = None,
                 extras: Mapping[str, Any] | None = None):
        self.fn, self.when = fn, when
        self.name = name or getattr(fn, "__name__", "hook")
        self.extras = dict(extras or {})

    def __call__(self, state, event, ctx):
        return self.fn(state, event, ctx)


def build(reg: Registry, spec: Any, where: str, *, phases=(), total_steps=None) -> Any:
    """A hook or evaluator from an object or a spec ``{name, when, **kwargs}``.

    ``name`` resolves to a class (called with ``kwargs``), a factory (called
    with ``kwargs`` when there are some), an object with a ``when``, or a
    function ``fn(state, event, ctx)`` (wrapped, with the spec's ``when``).
    Its ``when`` is then checked against ``phases`` and ``total_steps``.

    Raises:
      ValueError: an unresolvable name, bad arguments, or a ``when`` that can
        never fire, naming ``where``.
    """
    when = None
    if isinstance(spec, Mapping) or hasattr(spec, "to_dict"):
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise reg.error(f"{where}.name", name)
        when = spec.pop("when", None)
        found, label = reg.resolve(name, f"{where}.name"), name.split(":")[-1]
        try:
            if isinstance(found, type) or (spec and callable(found)):
                obj = found(**spec)
            elif spec:
                raise TypeError(f"{label} is not a class or factory")
            elif hasattr(found, "when"):
                obj = found
            else:
                obj = FunctionComponent(found, name=label)
        except TypeError as e:
            raise ValueError(f"{where} ({name}): bad arguments {sorted(spec)}: {e}.") from e
    else:
        obj = reg.resolve(spec, where)
        label = getattr(obj, "name", None) or type(obj).__name__
        if not hasattr(obj, "when") and not isinstance(obj, type):
            raise ValueError(f"{where}: {label} has no 'when'; wrap a function with "
                             "alternating.hooks.hook(fn, every=...) or give it a 'when'.")
    if not callable(obj):
        raise ValueError(f"{where} ({label}): a {reg.kind} must be callable as "
                         f"obj(state, event, ctx); got {type(obj).__name__}.")
    if not getattr(obj, "name", None):
        obj.name = label
    if when is not None:
        obj.when = when
    obj.when = parse_when(getattr(obj, "when", None), f"{where} ({obj.name})", phases=phases,
                          total_steps=total_steps)
    return obj
