"""Two processes on localhost (JAX's multi-controller runtime, gloo collectives on CPU)
train the same run as one process with 4 devices.

Run as a script, this file is one of the worker processes.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, executor):
    import jax
    import jax.numpy as jnp
    import optax

    import alternating
    from alternating.models import MLP

    model = MLP(features=(16, 10))

    def loss(params, batch, rng, extras):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}

    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(512, 64)).astype(np.float32),
            "y": rng.integers(0, 10, 512).astype(np.int32)}
    phases = [alternating.Phase("a", loss=loss, data="d", params=[("Dense_0/.*", True), (".*", None)]),
              alternating.Phase("b", loss=loss, data="d", params=[("Dense_1/.*", True), (".*", None)])]
    state = alternating.train(
        phases=phases, schedule={"name": "alternate", "pattern": ["a", "b"]},
        data={"d": {"dataset": data, "batch_size": 32}},
        init=lambda r: model.init(r, jnp.zeros((1, 64)))["params"], workdir=workdir,
        total_steps=10, progress=False, plot=False, print_fn=None, log_every_steps=5,
        executor=executor, chunk_steps=5)
    from jax.experimental import multihost_utils
    # Replicated state: every process holds the whole value.
    return [np.asarray(multihost_utils.process_allgather(x, tiled=True))
            for x in jax.tree.leaves(state.params)]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT
    # The reference runs in its own process too (one process, 4 devices), so this
    # test process never touches the devices.
    cmds = [[sys.executable, __file__, str(i), str(port), str(tmp_path / "two")] for i in range(2)]
    cmds.append([sys.executable, __file__, "single", "0", str(tmp_path / "one")])
    procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    got, expected = np.load(tmp_path / "params_0.npz"), np.load(tmp_path / "params_single.npz")
    assert len(got.files) == len(expected.files) == 4  # two Dense layers: kernel and bias
    for k in expected.files:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
    assert "devices 4 processes 2" in outs[0][0]
    assert "devices 4 processes 1" in outs[2][0]


if __name__ == "__main__":
    pid, port, out = sys.argv[1], sys.argv[2], sys.argv[3]
    import jax
    if pid == "single":  # the reference: one process, 4 devices, host executor
        jax.config.update("jax_num_cpu_devices", 4)
        leaves = _run(out, "host")
    else:
        pid = int(pid)
        jax.config.update("jax_num_cpu_devices", 2)
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                                   process_id=pid)
        leaves = _run(out, "fused")  # the fused executor's stacked batches, across processes
    if pid in (0, "single"):
        np.savez(os.path.join(os.path.dirname(out), f"params_{pid}.npz"),
                 **{f"p{i}": x for i, x in enumerate(leaves)})
    print(f"devices {jax.device_count()} processes {jax.process_count()}")
