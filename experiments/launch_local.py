"""Runs N cooperating JAX processes on this machine: multi-host training, locally.

Each process gets its own fake CPU devices and joins the others through
``jax.distributed.initialize`` (coordinator on localhost) with gloo CPU
collectives: the same code path as N hosts of a pod, on one machine.

  python experiments/launch_local.py --num_processes=2 --devices_per_process=2 -- \\
      --config=configs/default.py:smoke --workdir=runs/two_hosts

Everything after ``--`` goes to ``python -m alternating.main`` in every process.
Process 0's output is shown; the others' goes to ``WORKDIR/process_<i>.log``
when a ``--workdir`` is given. SIGTERM/SIGINT are forwarded to every process
(they all save at the same step and exit 75; run the command again to resume).
The launcher exits with the first non-zero exit code of its processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def device_count_flags(count: int, flags: str | None = None) -> str:
    """``XLA_FLAGS`` (default: this process's) with the fake CPU device count set to
    ``count``; the other flags are kept."""
    kept = [f for f in (os.environ.get("XLA_FLAGS", "") if flags is None else flags).split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={count}"])


def launch(num_processes: int, devices_per_process: int, args: list[str],
           python: str = sys.executable, all_to_files: bool = False) -> list[subprocess.Popen]:
    """Starts the processes; returns them (process 0 first).

    With ``all_to_files``, process 0's output also goes to ``WORKDIR/process_0.log``.
    """
    port = free_port()
    workdir = next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), None)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    procs = []
    for i in range(num_processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=device_count_flags(devices_per_process))
        cmd = [python, "-m", "alternating.main", f"--coordinator_address=localhost:{port}",
               f"--num_processes={num_processes}", f"--process_id={i}", *args]
        out = None
        if (i > 0 or all_to_files) and workdir:
            out = open(os.path.join(workdir, f"process_{i}.log"), "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=out,
                                      stderr=subprocess.STDOUT if out else None))
    return procs


def wait(procs: list[subprocess.Popen]) -> int:
    """Waits for every process, forwarding SIGTERM/SIGINT; the first non-zero exit code."""
    def forward(signum, frame):  # pylint: disable=unused-argument
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return next((c for c in codes if c != 0), 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, rest = argv[:i], argv[i + 1:]
    else:
        own, rest = argv, []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=2)
    opts = parser.parse_args(own)
    if opts.num_processes < 1 or opts.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be >= 1")
    if not any(a.startswith("--config") for a in rest):
        parser.error("give the run's flags after --, e.g. -- --config=configs/default.py:smoke "
                     "--workdir=runs/two_hosts")
    return wait(launch(opts.num_processes, opts.devices_per_process, rest))


if __name__ == "__main__":
    sys.exit(main())
