r"""Rehearsal-free continual learning from a pre-trained start (scheme 11).

Question: starting from a model pre-trained on half the classes, which
rehearsal-free method keeps the most over the later class-incremental
tasks: L2 to the previous parameters, EWC, feature distillation or
prediction distillation (LwF)? Claim (Smith et al., "A Closer Look at
Rehearsal-Free Continual Learning", arXiv:2203.17269, CVPR Workshops 2023;
the seed list and scheme 11): with a pre-trained start, L2 >= EWC > feature
distillation.

Setup: ``configs/cl_methods.py:split_digits,<method>,pretrained``: task 0
trains digits 0-4 (the pre-training, 200 steps), then tasks {5, 6} and
{7, 8, 9} (100 steps each; the smoke-sized MLP 64-64-10), every method applied from the first task
boundary on. Reported per seed: the final accuracy over all ten classes'
test examples (each task's accuracy weighted by its test-set size) and
forgetting. Every arm's learning rate is chosen from one grid on validation
data carved from the training split (``experiments/cl_tuning.py``), scored by
the same all-class accuracy on the held-out part.

    .venv/bin/python experiments/cl_rehearsal_free.py            # 10 seeds, docs/results
    .venv/bin/python experiments/cl_rehearsal_free.py --quick    # 2 seeds, tiny, untuned
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alternating import data as data_lib  # noqa: E402
from configs import cl_methods  # noqa: E402
from experiments import cl_tuning, common, pages  # noqa: E402
from experiments.cl_three_scenarios import (  # noqa: E402
    cli, collect, lwf_options, n_runs, present)

ARMS = {m: f"split_digits,{m},pretrained" for m in ("ft", "l2", "ewc", "feature", "lwf")}
# LwF as the library had it before the zero-padded target (both softmaxes over the old classes).
ARMS["lwf_old_softmax"] = ("split_digits,lwf,pretrained", lwf_options(softmax="old"))
METRICS = {"acc_all": "final accuracy over the test examples of all 10 classes",
           "forgetting": "mean over tasks 0-1 of best earlier minus final accuracy"}


# The held-out part of digits train the tuning scores on (experiments/cl_tuning.py).
VALIDATION = "train[80%:]"


def test_weights(split: str = "test") -> np.ndarray:
    """Each pre-trained-stream task's share of the digits examples of ``split``."""
    y = np.asarray(data_lib.load_arrays("digits", split)["y"])
    n = np.array([np.isin(y, g).sum() for g in cl_methods.PRETRAINED], np.float64)
    return n / n.sum()


def all_class_accuracy(entry: dict[str, Any], split: str = "test") -> float:
    """The last matrix row weighted by each task's share of ``split`` (the matrix's data)."""
    return float(np.dot(entry["matrix"][-1], test_weights(split)))


def validation_score(arm: str, entry: dict[str, Any]) -> float:
    """The all-class accuracy of a tuning run (its matrix is on the validation split)."""
    del arm
    return all_class_accuracy(entry, VALIDATION)


def main(argv=None) -> dict[str, Any]:
    args, seeds, out = cli("cl_rf_", __doc__, argv)
    arms, grid, wall = collect(ARMS, seeds, args, {"acc_all": all_class_accuracy,
                                                   "forgetting": lambda e: e["forgetting"]},
                               validation_score, "all-class accuracy (acc_all)")
    comparisons = present([
        {"name": "L2 vs EWC", "treatment": "l2", "baseline": "ewc", "metric": "acc_all",
         "claim": "greater"},
        {"name": "EWC vs feature distillation", "treatment": "ewc", "baseline": "feature",
         "metric": "acc_all", "claim": "greater"},
        {"name": "L2 vs feature distillation", "treatment": "l2", "baseline": "feature",
         "metric": "acc_all", "claim": "greater"},
    ] + [{"name": f"{m} vs fine-tuning", "treatment": m, "baseline": "ft", "metric": "acc_all",
          "claim": "greater"} for m in ("l2", "ewc", "feature", "lwf", "lwf_old_softmax")]
        + [{"name": "LwF: zero-padded target vs old-classes softmax", "treatment": "lwf",
            "baseline": "lwf_old_softmax", "metric": "acc_all", "claim": "greater"}], arms)
    means = {a: float(np.mean(v["acc_all"])) for a, v in arms.items()}
    data = {
        "name": "cl_rehearsal_free",
        "title": "Rehearsal-free methods from a pre-trained start: L2, EWC, feature and "
                 "prediction distillation",
        "intro": [
            "Claim (Smith et al., \"A Closer Look at Rehearsal-Free Continual Learning\", "
            "arXiv:2203.17269; scheme 11 of the project's list): when continual learning "
            "starts from a pre-trained model, plain L2 regularization towards the previous "
            "parameters does at least as well as EWC, and both beat feature distillation.",
            "Setup: digits, MLP 64-64-10, Adam (rate chosen per arm, below; fresh state per "
            "task), batch 32. "
            "Task 0 is the pre-training on digits 0-4 (200 steps); then class-incremental "
            "tasks {5, 6} and {7, 8, 9} (100 steps each), labels global, the task never given "
            "(`configs/cl_methods.py:split_digits,<method>,pretrained,smoke`, rescaled). Every method acts "
            "from the end of task 0: L2 (importance 1), EWC (summed diagonal Fisher), "
            "feature distillation (squared L2 distance of the 64 penultimate features to the "
            "snapshot's), prediction distillation (LwF, T 2: the current model's softmax over all 10 classes against the "
            "snapshot's softmax over the finished tasks' classes, probability 0 on the "
            "others, van de Ven & Tolias' target; `lwf_old_softmax`: both softmaxes over the "
            "finished tasks' classes, the library's LwF before that fix), and fine-tuning as "
            "the floor.",
            "Deviations: digits and a small MLP instead of CIFAR-100 / ImageNet-R with "
            "ResNet and ViT backbones; pre-training on half the classes of the same dataset; "
            "2 incremental tasks. Each method's lambda is searched on validation with the rate "
            "(below; the config's values: L2 1, EWC 1000, feature distillation 0.1, LwF 1), "
            "as the paper tuned each method's.",
        ] + cl_tuning.intro(grid, args.tune_seeds, seeds) + cl_tuning.lambda_intro(grid),
        "command": common.command("cl_rehearsal_free.py", argv),
        "provenance": pages.provenance(wall, n_runs(arms, seeds, args, grid)),
        "seeds": seeds, "metrics": METRICS, "arms": arms, **({"grid": grid} if grid else {}),
        "comparisons": comparisons,
        "notes": [
            "Means of the all-class accuracy: " + ", ".join(
                f"{a} {v:.3f}" for a, v in sorted(means.items(), key=lambda kv: -kv[1]))
            + (". Each method's lambda and rate were chosen on validation (the tuning "
               "section), so the order compares each method at its best on that split."
               if grid else ". Untuned (`--quick`): the configs' lambdas and rate."),
            "LwF with both softmaxes over the old classes cannot stop the new task's classes "
            "from taking the old tasks' predictions (their logits are free); the zero-padded "
            "target also pulls the new classes' probability down on the new task's inputs "
            "(docs/results/cl_three_scenarios.md has the ablation)."] + cl_tuning.notes(grid),
    }
    md = pages.write_page(data, out)
    print(md.read_text())
    return data


if __name__ == "__main__":
    main()
