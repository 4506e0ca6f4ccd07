"""Device-resident data: a stream's arrays on the devices, batches gathered in the step.

When a stream's examples fit the device-memory budget (option
``device_data_mb``, per device, all resident streams together), they are
placed on every device once, replicated, and each step receives only the
batch's *positions* (``int32 [batch]``, sharded like a batch) and gathers the
batch inside the jitted step (host executor) or the scanned chunk (fused
executor). The positions come from the stream itself
(:meth:`~alternating.data.Stream.next_indices`), so the batch order and the
checkpointed iterator state are exactly the host-gathered path's, and the
two paths give the same batches bit for bit (tested, across epochs and a
resume). A step then moves ``4 * batch`` bytes to the device instead of the
batch, and the gather runs on the device, off the host's critical path.

Streams with an order of their own (a curriculum, a user subclass) and
streams over the budget are gathered on the host as before; the run says so
once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

IDX = "idx"  # the key of a resident stream's positions in a step's inputs


class Resident:
    """A stream whose arrays live on the devices; it serves positions, not data."""

    def __init__(self, stream: Any, mesh: Any, arrays: Mapping[str, jax.Array] | None = None):
        from alternating import parallel  # pylint: disable=g-import-not-at-top
        self.stream = stream
        self.element_spec = stream.element_spec
        self.batch_size = stream.batch_size
        self.nbytes = nbytes(stream)
        if arrays is not None:  # another replica's copy of the same data
            self.arrays = arrays
            return
        rep = parallel.replicated(mesh)
        arrays = dict(stream.arrays)
        if jax.process_count() == 1:
            self.arrays = jax.device_put(arrays, rep)
        else:
            self.arrays = {k: jax.make_array_from_process_local_data(rep, v)
                           for k, v in arrays.items()}

    def next_input(self) -> dict[str, np.ndarray]:
        return {IDX: self.stream.next_indices()}

    def next_inputs(self, k: int) -> dict[str, np.ndarray]:
        return {IDX: self.stream.next_indices_many(k)}

    def get_state(self) -> dict[str, Any]:
        return self.stream.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.stream.set_state(state)


def nbytes(stream: Any) -> int:
    return int(sum(np.asarray(v).nbytes for v in stream.arrays.values()))


def gather(arrays: Mapping[str, jax.Array], inputs: Mapping[str, jax.Array]) -> dict:
    """The batch at ``inputs[IDX]`` (inside a jitted step)."""
    idx = inputs[IDX]
    return {k: jnp.take(v, idx, axis=0) for k, v in arrays.items()}


def place(stream_sets: list[dict[str, Any]], mesh: Any, budget_mb: float,
          say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each replica's streams with the chosen ones device-resident (arrays shared)."""
    chosen = choose(stream_sets[0], mesh, budget_mb, say)
    out = []
    for i, streams in enumerate(stream_sets):
        one = dict(streams)
        for name, res in chosen.items():
            one[name] = res if i == 0 else Resident(streams[name], mesh, arrays=res.arrays)
        out.append(one)
    return out


def choose(streams: Mapping[str, Any], mesh: Any, budget_mb: float,
           say: Callable[[str], None]) -> dict[str, Resident]:
    """The streams that go on the devices: plain-order streams, smallest first, within budget."""
    from alternating.data.pipeline import Stream  # pylint: disable=g-import-not-at-top
    if budget_mb <= 0:
        return {}
    eligible = {n: s for n, s in streams.items()
                if isinstance(s, Stream) and s.pure_order}
    left = budget_mb * 2 ** 20
    out, over = {}, []
    for name in sorted(eligible, key=lambda n: nbytes(eligible[n])):
        size = nbytes(eligible[name])
        if size <= left:
            out[name] = Resident(eligible[name], mesh)
            left -= size
        else:
            over.append(f"{name} ({size / 2 ** 20:.1f} MiB)")
    if over:
        say(f"data: stream(s) {over} exceed the device budget (device_data_mb={budget_mb:g}); "
            "they are gathered on the host instead.")
    return out
