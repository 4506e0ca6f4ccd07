"""experiments/common.validation_config: tuning never reads a test split, hooks and evaluators included."""

import pytest

from configs import cl_merge, cl_methods, default
from experiments import cl_tuning, common


def _specs(obj, path="config"):
    """(path, split) of every named-dataset data spec in plain config data."""
    if isinstance(obj, dict):
        out = [s for k, v in obj.items() for s in _specs(v, f"{path}.{k}")]
        if isinstance(obj.get("dataset"), str):
            out.append((path, obj.get("split") or "train"))
        return out
    if isinstance(obj, (list, tuple)):
        return [s for i, v in enumerate(obj) for s in _specs(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("make", [
    lambda: cl_methods.get_config("ewc,smoke"),
    lambda: cl_methods.get_config("nmc,pretrained,smoke"),
    lambda: cl_methods.get_config("lwf,smoke"),
    lambda: cl_merge.get_config("merge,smoke"),
    lambda: default.get_config("smoke"),
], ids=["ewc", "nmc", "lwf", "merge", "default"])
def test_every_data_spec_moves_to_the_carved_splits(make):
    cfg = make()
    before = _specs(cfg.to_dict())
    assert any(split == "test" for _, split in before)  # the config does read a test split
    after = dict(_specs(common.validation_config(cfg).to_dict()))
    assert set(after) == {p for p, _ in before}
    for path, split in before:  # train -> the kept 80%, test -> the held-out 20%
        assert after[path] == ("train[:80%]" if split == "train" else "train[80%:]"), path
    if cfg.get("evaluators"):
        val = cl_tuning.validation_config(cfg)
        assert all(v.data.split == "train[80%:]" for v in val.eval.values())


def test_a_hook_spec_on_another_split_is_refused_naming_its_path():
    cfg = cl_methods.get_config("ewc,smoke")
    hooks = cfg.hooks.to_dict() if hasattr(cfg.hooks, "to_dict") else list(cfg.hooks)
    with cfg.unlocked():
        cfg.hooks = [{"name": "x", "data": {"dataset": "digits", "split": "validation"}}] + [
            dict(h) for h in hooks]
    with pytest.raises(ValueError, match=r"hooks\[0\]\.data \(split 'validation'\)"):
        common.validation_config(cfg)


def test_the_lambda_search_reads_and_sets_every_phases_loss_weight():
    ewc = cl_methods.get_config("ewc,smoke")
    assert cl_tuning.lambda_of(ewc) == 1000.0
    assert cl_tuning.lambda_of(cl_methods.get_config("lwf,smoke")) == 1.0
    assert cl_tuning.lambda_of(cl_methods.get_config("feature,pretrained,smoke")) == 0.1
    assert cl_tuning.lambda_of(cl_methods.get_config("ft,smoke")) is None
    grid = {"chosen": {"ewc": 3e-3}, "method": {"chosen": {"ewc": 100.0}}}
    got = cl_tuning.chosen(ewc, grid, "ewc")
    weights = [p.loss_kwargs["lam"] for p in got.phases.values() if "lam" in p.loss_kwargs]
    assert weights and all(w == 100.0 for w in weights)
    assert {p.optimizer.lr for p in got.phases.values()} == {3e-3}
    assert cl_tuning.lambda_of(ewc) == 1000.0  # the original is unchanged
    with pytest.raises(ValueError, match="no phase of this config has loss_kwargs.lam"):
        cl_tuning.with_lambda(cl_methods.get_config("ft,smoke"), 1.0)
    with ewc.unlocked():
        next(iter(ewc.phases.values())).loss_kwargs.lam = 5.0
    with pytest.raises(ValueError, match=r"different loss_kwargs.lam \[5.0, 1000.0\]"):
        cl_tuning.lambda_of(ewc)
