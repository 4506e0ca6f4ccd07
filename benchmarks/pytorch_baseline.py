"""The JAX executors as multiples of a PyTorch eager alternating loop.

The same alternating MLP as ``harness.py`` (``mlp``: 64-256-256-10, batch 128;
``tiny``: 8-16-16-2, batch 8; phase ``a`` trains every parameter with its
own Adam, phase ``b`` only the last layer with its own Adam, ``[a, b]``
alternating), written in PyTorch eager: ``nn.Sequential`` of ``Linear`` and
``ReLU``, run with one thread and with PyTorch's default thread count (the
faster of the two in each repeat is the baseline), two ``torch.optim.Adam`` (lr 1e-3) over the two parameter sets,
cross-entropy loss, and the metrics the library reports (loss, accuracy,
gradient norm) kept as tensors and read every ``--log-every`` steps. Batches
come from the same stream as the JAX runs (``torch.from_numpy``, no copy).

PyTorch is an optional dependency (``pip install -e .[bench]``, CPU build);
without it the script prints a JSON line with ``"skipped"`` and exits 0.

Usage::

    python benchmarks/pytorch_baseline.py            # a few minutes on 2 cores
    python benchmarks/pytorch_baseline.py --quick

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import harness


def torch_rate(workload: str, n1: int, n2: int) -> float:
    """Steps/s of the eager loop: steps ``n1 .. n2`` timed (the first ``n1`` warm up)."""
    import torch
    torch.manual_seed(0)
    w = harness.WORKLOADS[workload]
    sizes = (w["inputs"],) + tuple(w["features"])
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    last = list(layers[-1].parameters())
    opts = {"a": torch.optim.Adam(net.parameters(), lr=harness.LR),
            "b": torch.optim.Adam(last, lr=harness.LR)}
    params = {"a": list(net.parameters()), "b": last}
    stream = harness.stream(workload, 0)
    records = []
    t0 = None
    for step in range(n2):
        if step == n1:
            t0 = time.perf_counter()
        phase = "ab"[step % 2]
        batch = next(stream)
        x, y = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"]).long()
        opts[phase].zero_grad(set_to_none=True)
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        with torch.no_grad():
            gnorm = torch.sqrt(sum((p.grad ** 2).sum() for p in params[phase]))
            acc = (logits.argmax(-1) == y).float().mean()
        opts[phase].step()
        # Frozen parameters got gradients too (one backward over the net); they are
        # zeroed at the next zero_grad and never stepped, as the JAX phases leave them.
        records.append(torch.stack([loss.detach(), acc, gnorm]))
        if (step + 1) % 1000 == 0 or step + 1 == n2:
            host = torch.stack(records).tolist()
            records = []
            if any(v != v for row in host for v in row):
                raise FloatingPointError("non-finite metric")
    return (n2 - n1) / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="mlp,tiny")
    ap.add_argument("--repeats", type=int, default=None, help="default 3; --quick 1")
    ap.add_argument("--steps-mlp", type=int, default=3000)
    ap.add_argument("--steps-tiny", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--torch-threads", default=None,
                    help="comma-separated PyTorch thread counts to try (default: 1 and "
                         "PyTorch's default)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(json.dumps({"benchmark": "pytorch_baseline",
                          "skipped": "torch is not installed (pip install -e .[bench])"}))
        return None
    args.torch_threads = sorted({int(t) for t in args.torch_threads.split(",")} if args.torch_threads
                                else {1, torch.get_num_threads()})
    if args.quick:
        args.workloads, args.steps_tiny, args.chunk = "tiny", 40, 20
    args.repeats = args.repeats or (1 if args.quick else 3)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    log = 5 * args.chunk
    result = {"benchmark": "pytorch_baseline", "torch": torch.__version__,
              "torch_threads": args.torch_threads, "repeats": args.repeats,
              "quick": args.quick, "chunk_steps": args.chunk, **harness.machine()}
    for wl in args.workloads.split(","):
        steps = args.steps_mlp if wl == "mlp" else args.steps_tiny
        n1 = 2 * log
        n2 = n1 + -(-steps // log) * log
        mark = args.chunk + 1
        threads = args.torch_threads
        rates = {f"torch_{t}t": [] for t in threads}
        rates.update({"torch": [], "host": [], "fused": []})
        for r in range(args.repeats):
            for t in threads:
                torch.set_num_threads(t)
                rates[f"torch_{t}t"].append(torch_rate(wl, n1, n2))
            # The baseline is PyTorch's better thread setting in this repeat: on a
            # busy machine its multi-threaded kernels can be far slower than one thread.
            rates["torch"].append(max(rates[f"torch_{t}t"][-1] for t in threads))
            for ex in ("host", "fused"):
                run = lambda n: harness.run_library(wl, n, mark, log, executor=ex,
                                                    chunk_steps=args.chunk)
                rates[ex].append(harness.diff_rates(run, None if args.quick else n1, n2, mark)[0])
            print(f"  {wl} repeat {r + 1}/{args.repeats}: steps/s "
                  + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
        ratio = lambda a: harness.summary([x / y for x, y in zip(rates[a], rates["torch"])])
        result[wl] = {"steps_per_s": {k: harness.summary(v) for k, v in rates.items()},
                      "host_vs_torch": ratio("host"), "fused_vs_torch": ratio("fused"),
                      "timed_steps": n2 - n1}
        print(f"{wl}: JAX host x{result[wl]['host_vs_torch']['median']}, fused "
              f"x{result[wl]['fused_vs_torch']['median']} of PyTorch eager", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
