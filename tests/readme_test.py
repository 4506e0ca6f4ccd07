"""The README's Python example runs as printed."""

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(lang):
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(rf"```{lang}\n(.*?)```", f.read(), flags=re.S)


def test_readme_starts_with_the_two_commands():
    first = _blocks("bash")[0].strip().splitlines()
    assert [l.split("#")[0].strip() for l in first] == ["make run", "make test"]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = next(b for b in _blocks("python") if "alt.train(" in b)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    state = scope["state"]
    assert {k: int(v) for k, v in state.phase_steps.items()} == {"body": 600, "head": 200}
    with open(tmp_path / "runs" / "two_phase" / "results.json") as f:
        res = json.load(f)
    assert res["final_eval"]["test"]["accuracy"] > 0.9
    # The default executor ('auto') fuses this planned schedule: chunks of 100.
    assert res["compiles"] == {"fused:100": 1, "eval:test": 1}
