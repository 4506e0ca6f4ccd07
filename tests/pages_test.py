"""Results pages are renderings of their committed JSON, and nothing else."""

import json
import pathlib

import pytest

from experiments import pages

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _data(**over):
    data = {
        "name": "toy", "title": "A toy comparison", "intro": ["Claim: b beats a."],
        "command": ".venv/bin/python experiments/toy.py",
        "provenance": {"date": "2026-11-28 00:00 UTC", "wall_seconds": 3.0, "runs": 10,
                       "machine": {"nproc": "2", "cpu": "cpu", "platform": "linux",
                                   "python": "3.11", "jax": "0.10", "devices": "1 x cpu"}},
        "seeds": [0, 1, 2, 3, 4],
        "metrics": {"acc": "test accuracy"},
        "arms": {"a": {"acc": [0.80, 0.81, 0.79, 0.80, 0.82]},
                 "b": {"acc": [0.85, 0.86, 0.83, 0.86, 0.87]}},
        "comparisons": [{"name": "b vs a", "treatment": "b", "baseline": "a",
                         "metric": "acc", "claim": "greater"}],
        "notes": ["Nothing failed."],
    }
    data.update(over)
    return data


def test_every_committed_page_is_the_rendering_of_its_json():
    found = pages.pages(RESULTS)
    assert found, "no results page data (docs/results/*.json in the page format)"
    for path in found:
        data = json.loads(path.read_text(encoding="utf-8"))
        md = path.with_suffix(".md")
        assert md.exists(), f"{path.name} has no page beside it"
        assert md.read_text(encoding="utf-8") == pages.render_page(data), (
            f"{md.name} differs from the rendering of {path.name}: rerun its script or "
            f"`python -m experiments.pages docs/results/{path.name}`")


def test_verdicts_come_from_the_data(tmp_path):
    md = pages.write_page(_data(), tmp_path).read_text()
    assert "| b vs a | greater |" in md and "| confirmed |" in md
    flipped = _data(arms={"a": {"acc": [0.85, 0.86, 0.83, 0.86, 0.87]},
                          "b": {"acc": [0.80, 0.81, 0.79, 0.80, 0.82]}})
    assert "| contradicted |" in pages.render_page(flipped)
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert saved["format"] == pages.FORMAT and pages.pages(tmp_path) == [tmp_path / "toy.json"]
    assert pages.render_page(saved) == md


def test_the_rendering_is_stable_and_shows_every_arm_and_the_grid():
    grid = {"param": "lr", "values": [0.001, 0.01], "metric": "validation accuracy",
            "scores": {"a": {"0.001": 0.7, "0.01": 0.8}, "b": {"0.001": 0.75, "0.01": 0.9}},
            "chosen": {"a": 0.01, "b": 0.01}}
    text = pages.render_page(_data(grid=grid))
    assert text == pages.render_page(_data(grid=grid))
    assert "| a | 0.804 ± 0.011 [0.79, 0.82] |" in text
    assert "## Tuning: lr chosen per arm on validation accuracy" in text
    assert "| b | 0.75 | 0.9 | 0.01 |" in text


@pytest.mark.parametrize("change, message", [
    ({"arms": {"a": {"acc": [0.8, 0.8]}, "b": {"acc": [0.9] * 5}}},
     "arm 'a' metric 'acc' has 2 values for 5 seeds"),
    ({"comparisons": [{"name": "c", "treatment": "z", "baseline": "a", "metric": "acc",
                       "claim": "greater"}]}, "names treatment arm 'z'; arms: ['a', 'b']"),
    ({"comparisons": [{"name": "c", "treatment": "b", "baseline": "a", "metric": "acc",
                       "claim": "better"}]}, "valid claims: ['greater', 'less']"),
    ({"arms": {"a": {"loss": [1.0] * 5}, "b": {"acc": [0.9] * 5}}},
     "arm 'a' has metric 'loss'; declared metrics: ['acc']"),
    ({"colour": "red"}, "unknown fields ['colour']"),
])
def test_bad_page_data_is_refused_naming_the_field_and_nothing_is_written(tmp_path, change,
                                                                          message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pages.write_page(_data(**change), tmp_path)
    assert not list(tmp_path.iterdir())
