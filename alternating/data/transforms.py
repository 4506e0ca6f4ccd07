"""Whole-dataset task transforms, applied once to in-memory arrays.

A transform maps a dict of arrays (`x` features, `y` int labels, and any extra
per-example arrays) to a new dict; inputs are never modified. Transforms are
configured as data, a list of specs `{'name': ..., **kwargs}` (dicts or
ml_collections ConfigDicts; a bare string names a transform without
arguments), so derived tasks come from configs:

    transforms = [
        {'name': 'class_subset', 'classes': [0, 1], 'relabel': True},
        {'name': 'permute', 'seed': 3},    # permuted-MNIST style task 3
    ]

Transforms that change the label space also say how `num_classes` changes,
see `transformed_num_classes`.
"""

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    'Arrays',
    'TransformSpec',
    'apply_transforms',
    'register_transform',
    'transform_names',
    'transformed_num_classes',
]

Arrays = dict[str, np.ndarray]
TransformSpec = Union[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class _Transform:
    fn: Callable[..., Arrays]
    # Maps (num_classes or None, **kwargs) to the new number of classes.
    num_classes: Callable[..., Optional[int]]


_REGISTRY: dict[str, _Transform] = {}


def _same_num_classes(num_classes, **kwargs):
    del kwargs
    return num_classes


def register_transform(
    name: str,
    fn: Callable[..., Arrays],
    num_classes: Optional[Callable[..., Optional[int]]] = None,
) -> None:
    """Registers `fn(arrays, **kwargs) -> arrays` under `name`.

    Args:
        name: the name used in transform specs.
        fn: a function of the arrays dict and keyword arguments; it must return
            a new dict and leave its input unchanged.
        num_classes: optional `f(num_classes, **kwargs) -> num_classes` for
            transforms that change the label space; default: unchanged.

    Raises:
        ValueError: if `name` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(
            f'Transform {name!r} is already registered; pick another name '
            f'(registered: {transform_names()}).'
        )
    _REGISTRY[name] = _Transform(fn, num_classes or _same_num_classes)


def transform_names() -> list[str]:
    """Returns the registered transform names, sorted."""
    return sorted(_REGISTRY)


def _to_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {'name': spec}
    if hasattr(spec, 'to_dict'):  # ml_collections (Frozen)ConfigDict.
        return spec.to_dict()
    if isinstance(spec, Mapping):
        return dict(spec)
    raise TypeError(
        f'A transform spec must be a name or a mapping {{"name": ..., **kwargs}}'
        f', got {type(spec).__name__}: {spec!r}.'
    )


def _resolve(spec: TransformSpec) -> tuple[str, _Transform, dict[str, Any]]:
    """Looks up a spec and checks its keyword arguments against the function."""
    spec = _to_dict(spec)
    if 'name' not in spec:
        raise ValueError(
            f'Transform spec {spec!r} has no "name"; valid names: '
            f'{transform_names()}.'
        )
    name = spec.pop('name')
    if name not in _REGISTRY:
        raise ValueError(
            f'Unknown transform {name!r}; valid names: {transform_names()}.'
        )
    transform = _REGISTRY[name]
    params = list(inspect.signature(transform.fn).parameters.values())[1:]
    allowed = [p.name for p in params]
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    extra = sorted(set(spec) - set(allowed))
    missing = [k for k in required if k not in spec]
    if extra or missing:
        raise ValueError(
            f'Transform {name!r}: unknown arguments {extra}, missing arguments '
            f'{missing}; it takes {allowed} (required: {required}).'
        )
    return name, transform, spec


def apply_transforms(arrays: Mapping[str, np.ndarray], specs: Sequence[TransformSpec]) -> Arrays:
    """Applies transform specs in order and returns new arrays.

    Args:
        arrays: dict with at least `x` (features, leading example axis) and `y`
            (integer labels); other per-example arrays are carried along.
        specs: sequence of transform specs, applied first to last.

    Returns:
        A new dict of arrays; the input arrays are not modified.

    Raises:
        ValueError: for an unknown transform name or wrong arguments.
    """
    out = dict(arrays)
    for spec in specs or ():
        name, transform, kwargs = _resolve(spec)
        out = transform.fn(out, **kwargs)
    return out


def transformed_num_classes(
    num_classes: Optional[int], specs: Sequence[TransformSpec]
) -> Optional[int]:
    """Returns the number of classes after applying `specs` (None if unknown)."""
    for spec in specs or ():
        _, transform, kwargs = _resolve(spec)
        num_classes = transform.num_classes(num_classes, **kwargs)
    return num_classes


# --- The transforms. -----------------------------------------------------------


def class_subset(arrays: Arrays, classes: Sequence[int], relabel: bool = False) -> Arrays:
    """Keeps the examples whose label is in `classes` (order kept).

    With `relabel`, `classes[i]` becomes label `i` (e.g. split-MNIST tasks
    with a fresh head); otherwise labels keep their original ids.
    """
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(
            f'Transform "class_subset": classes must be a non-empty list of '
            f'distinct labels, got {classes}.'
        )
    keep = np.isin(arrays['y'], classes)
    out = {k: v[keep] for k, v in arrays.items()}
    if relabel:
        lookup = np.full(max(max(classes), int(arrays['y'].max(initial=0))) + 1, -1, np.int32)
        lookup[classes] = np.arange(len(classes), dtype=np.int32)
        out['y'] = lookup[out['y']].astype(arrays['y'].dtype)
    return out


def _class_subset_num_classes(num_classes, classes, relabel=False):
    return len(classes) if relabel else num_classes


def permute(arrays: Arrays, seed: int) -> Arrays:
    """Applies one fixed permutation, drawn from `seed`, to every example's features.

    The features are flattened, permuted and reshaped back, so images stay
    images (permuted-MNIST style tasks).
    """
    x = arrays['x']
    size = int(np.prod(x.shape[1:]))
    perm = np.random.default_rng(seed).permutation(size)
    return {**arrays, 'x': x.reshape(len(x), size)[:, perm].reshape(x.shape)}


def rotate(arrays: Arrays, k: int) -> Arrays:
    """Rotates (H, W, C) images by `k` quarter turns counter-clockwise."""
    x = arrays['x']
    if x.ndim != 4:
        raise ValueError(
            f'Transform "rotate" needs images of shape (H, W, C), got features of '
            f'shape {x.shape[1:]}; use it on image datasets such as "digits".'
        )
    return {**arrays, 'x': np.ascontiguousarray(np.rot90(x, k=int(k), axes=(1, 2)))}


def flatten(arrays: Arrays) -> Arrays:
    """Flattens features to shape (N, prod(feature shape))."""
    x = arrays['x']
    return {**arrays, 'x': x.reshape(len(x), -1)}


def as_signal(arrays: Arrays) -> Arrays:
    """Reads each example as a 1-D signal of shape (prod(feature shape), 1).

    A second "modality" of the same examples: 8x8 digits become 64-sample
    signals scanned row by row, which a 1-D stem can read beside MNIST-1D.
    """
    x = arrays['x']
    return {**arrays, 'x': x.reshape(len(x), -1, 1)}


def relabel(arrays: Arrays, mapping: Sequence[int]) -> Arrays:
    """Maps label `c` to `mapping[c]` (e.g. digit -> parity: [0, 1] * 5)."""
    mapping = np.asarray(mapping, dtype=arrays['y'].dtype)
    y = arrays['y']
    if mapping.ndim != 1 or (len(y) and int(y.max()) >= len(mapping)):
        raise ValueError(
            f'Transform "relabel": mapping must be a list with one entry per '
            f'class (at least {int(y.max(initial=-1)) + 1}), got {mapping.tolist()}.'
        )
    return {**arrays, 'y': mapping[y]}


def _relabel_num_classes(num_classes, mapping):
    del num_classes
    return int(max(mapping)) + 1


def noise(arrays: Arrays, std: float, seed: int) -> Arrays:
    """Adds fixed Gaussian noise (drawn once from `seed`) to the features."""
    x = arrays['x']
    eps = np.random.default_rng(seed).normal(0.0, std, size=x.shape)
    return {**arrays, 'x': (x + eps).astype(x.dtype)}


register_transform('class_subset', class_subset, _class_subset_num_classes)
register_transform('permute', permute)
register_transform('rotate', rotate)
register_transform('flatten', flatten)
register_transform('as_signal', as_signal)
register_transform('relabel', relabel, _relabel_num_classes)
register_transform('noise', noise)
