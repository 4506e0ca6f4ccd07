r"""Nearest-mean classifier on a frozen pre-trained body vs a fine-tuned linear head (scheme 17).

Question: after pre-training a body on half the classes and freezing it, does
a nearest-mean classifier over class feature means (no training at all after
the pre-training) match or beat fine-tuning a linear head on the same body
through the class-incremental tasks? Claim (Janson, Zhang, Aljundi &
Elhoseiny, "A Simple Baseline that Questions the Use of Pretrained-Models in
Continual Learning", arXiv:2210.04428; scheme 17): with a good pre-trained
body, NMC matches or beats methods that keep training. The LDA head (shared
covariance, shrinkage 0.1) is the head of First Session Adaptation (Panos et
al., arXiv:2303.13199), run beside it.

Setup: ``configs/cl_methods.py:split_digits,<method>,pretrained``: task 0
trains the whole MLP 64-64-10 on digits 0-4 (200 steps); tasks {5, 6} and
{7, 8, 9} (100 steps each) train only the last layer. ``linear`` scores that layer,
``nmc`` / ``lda`` score the class-mean head computed at each task end from
the frozen body's features; ``ft`` (every parameter trained on every task)
is the usual floor. Every arm's learning rate is chosen from one grid on
validation data carved from the training split (``experiments/cl_tuning.py``).

    .venv/bin/python experiments/cl_nmc.py            # 10 seeds, docs/results
    .venv/bin/python experiments/cl_nmc.py --quick    # 2 seeds, tiny, untuned
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import cl_tuning, common, pages  # noqa: E402
from experiments.cl_rehearsal_free import all_class_accuracy, validation_score  # noqa: E402
from experiments.cl_three_scenarios import cli, collect, n_runs, present  # noqa: E402

ARMS = {m: f"split_digits,{m},pretrained" for m in ("linear", "nmc", "lda", "ft")}
METRICS = {"acc_all": "final accuracy over the test examples of all 10 classes",
           "acc": "final average accuracy over the 3 tasks (ACC)"}


def grid_note(means: dict[str, float], grid: dict | None) -> list[str]:
    """What tuning the rate per arm changed (none for an untuned page)."""
    if not grid:
        return []
    return ["Chosen rates: " + ", ".join(f"{a} {v:g}" for a, v in grid["chosen"].items())
            + ". Untuned (every arm at 1e-3) this page had NMC 0.773, LDA 0.933, linear head "
            f"0.292, fine-tuning 0.271; the linear head gains most from its rate (now "
            f"{means['linear']:.3f}), presumably because a smaller rate moves the head less "
            "towards each new task's classes (not measured here)."] if "linear" in means else []


def main(argv=None) -> dict[str, Any]:
    args, seeds, out = cli("cl_nmc_", __doc__, argv)
    arms, grid, wall = collect(ARMS, seeds, args, {"acc_all": all_class_accuracy,
                                                   "acc": lambda e: e["acc"]},
                               validation_score, "all-class accuracy (acc_all)")
    means = {a: float(np.mean(v["acc_all"])) for a, v in arms.items()}
    data = {
        "name": "cl_nmc",
        "title": "Nearest-mean classifier on a frozen pre-trained body vs a linear head",
        "intro": [
            "Claim (Janson et al., \"A Simple Baseline that Questions the Use of "
            "Pretrained-Models in Continual Learning\", arXiv:2210.04428; scheme 17): the "
            "class means of a frozen pre-trained body, with nearest-mean prediction, match or "
            "beat continual methods that keep training. Here against the simplest of those, a "
            "linear head trained task by task on the same frozen body; LDA (First Session "
            "Adaptation's head, Panos et al., arXiv:2303.13199) beside it.",
            "Setup: digits, MLP 64-64-10, Adam (rate chosen per arm, below), batch 32; task "
            "0 trains every "
            "parameter on digits 0-4 (200 steps); tasks {5, 6} and {7, 8, 9} (100 steps "
            "each) train only the last layer (`configs/cl_methods.py:split_digits,<method>,"
            "pretrained,smoke`, rescaled). NMC / LDA: per-class sums of the 64 penultimate features over "
            "each task's training data at its end (the `ClassStatistics` hook); LDA shrinks "
            "the shared covariance 10% towards a scaled identity, equal priors.",
            "Deviations: a body pre-trained on half the classes of the same small dataset "
            "(the paper uses an ImageNet-pre-trained ViT and 10-split CIFAR-100 / CORe50); "
            "Euclidean distance on unnormalized features.",
        ] + cl_tuning.intro(grid, args.tune_seeds, seeds) + ([
            "The rate is every phase's: for `nmc` and `lda` it acts only through the "
            "pre-training of the body (task 0), since their heads are class means, not "
            "trained; LDA's shrinkage (0.1) is fixed."] if grid else []),
        "command": common.command("cl_nmc.py", argv),
        "provenance": pages.provenance(wall, n_runs(arms, seeds, args, grid)),
        "seeds": seeds, "metrics": METRICS, "arms": arms, **({"grid": grid} if grid else {}),
        "comparisons": present([
            {"name": "NMC vs linear head", "treatment": "nmc", "baseline": "linear",
             "metric": "acc_all", "claim": "greater"},
            {"name": "LDA vs linear head", "treatment": "lda", "baseline": "linear",
             "metric": "acc_all", "claim": "greater"},
            {"name": "NMC vs fine-tuning", "treatment": "nmc", "baseline": "ft",
             "metric": "acc_all", "claim": "greater"},
            {"name": "LDA vs NMC", "treatment": "lda", "baseline": "nmc", "metric": "acc_all",
             "claim": "greater"},
        ], arms),
        "notes": ["Means of the all-class accuracy: " + ", ".join(
            f"{a} {v:.3f}" for a, v in sorted(means.items(), key=lambda kv: -kv[1])) + "."]
            + grid_note(means, grid) + cl_tuning.notes(grid),
    }
    md = pages.write_page(data, out)
    print(md.read_text())
    return data


if __name__ == "__main__":
    main()
