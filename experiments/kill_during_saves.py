"""SIGKILL a run at random moments while it checkpoints every step, then check
that the restarts lose nothing and end bit-identical to an uninterrupted run.

  python experiments/kill_during_saves.py --workdir=runs/kill_during_saves

The run is the two-phase `weighted` scheme of `tests/resume_worker.py` (400
steps, a checkpoint every step, one kept), so most kills land during an
asynchronous save. Each restart is the same command. Prints, per kill, the
step resumed from, the checkpoints on disk and the unfinished saves set aside,
then whether the final state, `metrics.jsonl` and `timeline.jsonl` equal a run
that was never interrupted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "resume_worker.py")
ARGS = ["weighted", "400", "1", "1"]  # schedule, steps, checkpoint every, keep


def _rows(path):
    from alternating import metrics as metrics_lib
    return [{k: v for k, v in r.items() if k != "time"} for r in metrics_lib.read_jsonl(path)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="runs/kill_during_saves")
    ap.add_argument("--kills", type=int, default=12, help="at most this many kills")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    ap.add_argument("--min-s", type=float, default=3.0, help="earliest kill after a start")
    ap.add_argument("--max-s", type=float, default=9.0, help="latest kill after a start")
    opts = ap.parse_args(argv)
    killed, ref = os.path.join(opts.workdir, "killed"), os.path.join(opts.workdir, "reference")
    shutil.rmtree(opts.workdir, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(opts.seed)
    kills = mid_save = 0
    for i in range(opts.kills + 1):
        proc = subprocess.Popen([sys.executable, WORKER, killed, *ARGS], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=rng.uniform(opts.min_s, opts.max_s) if i < opts.kills else 600)
        except subprocess.TimeoutExpired:
            proc.kill()
        out = proc.communicate()[0]
        ck = os.path.join(killed, "checkpoints")
        on_disk = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
        resumed = [l.split()[-1] for l in out.splitlines() if l.startswith("resumed from")]
        print(f"run {i}: exit {proc.returncode}, resumed at {resumed[0] if resumed else '-'}, "
              f"checkpoints {on_disk}", flush=True)
        if proc.returncode == 0:
            break
        kills += 1
        mid_save += any(".orbax-checkpoint-tmp" in d for d in on_disk)
    subprocess.run([sys.executable, WORKER, ref, *ARGS], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    import jax
    import numpy as np
    import alternating
    a, _ = alternating.load_state(ref)
    b, _ = alternating.load_state(killed)
    same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(jax.device_get(a)),
                                                       jax.tree.leaves(jax.device_get(b))))
    rows = _rows(os.path.join(ref, "metrics.jsonl")) == _rows(os.path.join(killed, "metrics.jsonl"))
    tl = _rows(os.path.join(ref, "timeline.jsonl")) == _rows(os.path.join(killed, "timeline.jsonl"))
    damaged = os.path.join(killed, "checkpoints_damaged")
    print(f"{kills} kills, {mid_save} left an unfinished save; set aside: "
          f"{sorted(os.listdir(damaged)) if os.path.isdir(damaged) else []}")
    print(f"final state bit-identical: {same}; metrics rows equal: {rows}; timeline equal: {tl}")
    return 0 if same and rows and tl else 1


if __name__ == "__main__":
    sys.exit(main())
