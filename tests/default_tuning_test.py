"""The validation variants of configs/default.py and configs/mnist1d.py, and the tuning
logic of experiments/multimodal.py and experiments/default_tuning.py (training stubbed)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import default, mnist1d  # noqa: E402
from experiments import default_tuning, multimodal, pages  # noqa: E402


def test_default_val_variant_holds_out_the_end_of_each_training_set():
    c = default.get_config("val")
    assert {s.split for s in c.data.values()} == {default.TRAIN_SPLIT}
    assert sorted(c.eval) == ["images_val", "signals_val"]
    assert {e.data.split for e in c.eval.values()} == {default.VAL_SPLIT}
    assert "test" not in json.dumps(c.to_dict())  # no test set anywhere in a tuning run
    plain = default.get_config()
    assert sorted(plain.eval) == ["images_test", "signals_test"]
    assert {s.split for s in plain.data.values()} == {"train"}


@pytest.mark.parametrize("arm", default.ARMS)
def test_default_lr_variant_sets_every_phase(arm):
    c = default.get_config(f"{arm},lr=0.02")
    assert {p.optimizer.lr for p in c.phases.values()} == {0.02}
    assert {p.optimizer.lr for p in default.get_config(arm).phases.values()} == {default.LR}


def test_default_bad_variant_names_the_valid_ones():
    with pytest.raises(ValueError, match="'val'.*'lr=X'"):
        default.get_config("validation")


def test_mnist1d_tuned_and_val_variants():
    assert dict(mnist1d.get_config("mlp,tuned").phases.train.optimizer) == {
        "name": "adam", "lr": mnist1d.TUNED["mlp"]["lr"],
        "weight_decay": mnist1d.TUNED["mlp"]["wd"]}
    # Models without a tuned entry keep the paper's settings.
    assert dict(mnist1d.get_config("cnn,tuned").phases.train.optimizer) == {
        "name": "adam", "lr": mnist1d.PAPER_LR, "weight_decay": mnist1d.PAPER_WD}
    c = mnist1d.get_config("mlp,val,wd=0.1")
    assert c.data.train.split == mnist1d.TRAIN_SPLIT and list(c.eval) == ["val"]
    assert c.eval.val.data.split == mnist1d.VAL_SPLIT
    assert c.phases.train.optimizer.weight_decay == 0.1
    with pytest.raises(ValueError, match="'wd=X'"):
        mnist1d.get_config("mlp,wd")


def _fake_run(arm, embed, seed, steps, workdir, data_dir=None, *, lr=None, val=False):
    """Accuracy peaks at lr 3e-3 for single-modality arms and at 1e-2 for the others."""
    best = 3e-3 if arm.endswith("_only") else 1e-2
    acc = 0.9 - abs(lr - best) * 10 + 0.01 * seed + (0.005 if embed else 0.0)
    return {"arm": arm, "embed": embed, "seed": seed, "lr": lr, "seconds": 0.1,
            **{m: {"accuracy": acc - (0.05 if val else 0.0), "loss": 1.0 - acc}
               for m in multimodal.MODALITIES}}


def test_multimodal_chooses_each_arms_lr_on_validation_and_writes_a_page(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(multimodal, "run_one", _fake_run)
    out = tmp_path / "out"
    result = multimodal.main(["--seeds", "0", "1", "--tune_seeds", "0", "--lrs", "0.001",
                              "0.003", "0.01", "--steps", "5", "--out", str(out)])
    chosen = result["grid"]["chosen"]
    assert chosen["images_only"] == chosen["signals_only,no_embed"] == 0.003
    assert chosen["alternating"] == chosen["mixed,no_embed"] == 0.01
    assert {r["lr"] for r in result["runs"] if r["arm"] == "mixed"} == {0.01}
    data = json.loads((out / "multimodal.json").read_text())
    assert data["format"] == pages.FORMAT and data["seeds"] == [0, 1]
    assert set(data["arms"]["images_only"]) == {"images_acc", "images_loss"}
    md = (out / "multimodal.md").read_text()
    assert md == pages.render_page(data)  # the page is its JSON's rendering
    assert "## Verdicts" in md and "## Results" in md and "--out" not in md


def test_multimodal_one_seed_page_has_no_verdict_and_no_json(tmp_path, monkeypatch):
    monkeypatch.setattr(multimodal, "run_one", _fake_run)
    result = multimodal.main(["--quick", "--out", str(tmp_path)])
    assert result["grid"] is None and {r["lr"] for r in result["runs"]} == {default.LR}
    assert not (tmp_path / "multimodal.json").exists()
    md = (tmp_path / "multimodal.md").read_text()
    assert "One seed only: no verdict" in md and "## Verdicts" not in md


def test_default_tuning_page_picks_the_best_mean_validation_cell():
    runs = []
    for seed in (0, 1):
        for img in (1e-3, 1e-2):
            for sig in (1e-3, 1e-2):
                ov = {default_tuning.PATHS["images"]: img, default_tuning.PATHS["signals"]: sig}
                fe = {"images_val": {"accuracy": 0.98 - img}, "signals_val": {
                    "accuracy": 0.8 + 10 * sig + 0.01 * seed}}
                runs.append({"cell": "c", "overrides": ov, "seed": seed, "final_eval": fe})
    arms = default_tuning.collect({"runs": runs})
    chosen = max(arms, key=lambda a: sum(arms[a]["mean_val"]))
    assert chosen == "images 0.001, signals 0.01"
    assert arms[chosen]["signals_val"] == pytest.approx([0.9, 0.91])
    data = default_tuning.page(arms, chosen, "images 0.001, signals 0.001", steps=5,
                               seeds=[0, 1], command="cmd", wall=1.0, n_runs=8)
    text = pages.render_page(data)
    assert "**images 0.001, signals 0.01**" in text and "## Verdicts" in text
    # The config keeps one rate (default.LR) for every phase: the page says so and tests the gap.
    assert f"keeps one rate for every phase, its `LR` {default.LR:g}" in text
    assert "chosen vs the config's setting, mean_val" in text
    same = default_tuning.arm_name({p: default.LR for p in default_tuning.PATHS.values()})
    text = pages.render_page(default_tuning.page(arms, same, "images 0.001, signals 0.001",
                                                 steps=5, seeds=[0, 1], command="cmd", wall=1.0,
                                                 n_runs=8))
    assert "which `configs/default.py` sets" in text and "config's setting" not in text


def test_default_tuning_widens_an_axis_whose_choice_is_at_its_end(monkeypatch, tmp_path):
    """Signals' accuracy peaks at lr 0.05, beyond the grid's top: each round adds one value
    to the signals axis (the images axis, chosen inside, stays), and the resumed sweep is
    called with the grown grid until the choice is inside."""
    import math
    from alternating import sweep

    grids = []

    def fake_run(cfg, work, *, grid, seeds, **kw):
        grids.append({p: list(v) for p, v in grid.items()})
        runs = []
        for img in grid[default_tuning.PATHS["images"]]:
            for sig in grid[default_tuning.PATHS["signals"]]:
                ov = {default_tuning.PATHS["images"]: img, default_tuning.PATHS["signals"]: sig}
                fe = {"images_val": {"accuracy": 0.98 - abs(math.log10(img / 3e-3)) / 100},
                      "signals_val": {"accuracy": 0.9 - abs(math.log10(sig / 0.05)) / 10}}
                runs += [{"cell": "c", "overrides": ov, "seed": s, "final_eval": fe,
                          "wall_time_s": 1.0} for s in seeds]
        return {"runs": runs}

    monkeypatch.setattr(sweep, "run", fake_run)
    out = default_tuning.main(["--steps", "5", "--seeds", "2", "--out", str(tmp_path),
                               "--workdir", str(tmp_path / "w")])
    sig = default_tuning.PATHS["signals"]
    assert [g[sig] for g in grids] == [[1e-3, 3e-3, 1e-2], [1e-3, 3e-3, 1e-2, 0.03],
                                       [1e-3, 3e-3, 1e-2, 0.03, 0.1]]
    assert all(g[default_tuning.PATHS["images"]] == [1e-3, 3e-3, 1e-2] for g in grids)
    assert out["chosen"] == "images 0.003, signals 0.03"  # 0.03 beats 0.1 (peak at 0.05)
    text = (tmp_path / "default_tuning.md").read_text()
    assert "widened one value beyond that end at a time (2 round(s)" in text
    assert "signals to [0.001, 0.003, 0.01, 0.03, 0.1]" in text
    # --widen 1 stops after one round, with the choice still at the end it moved to.
    grids.clear()
    out = default_tuning.main(["--steps", "5", "--seeds", "2", "--out", str(tmp_path / "o"),
                               "--workdir", str(tmp_path / "w1"), "--widen", "1"])
    assert len(grids) == 2 and out["chosen"] == "images 0.003, signals 0.03"
