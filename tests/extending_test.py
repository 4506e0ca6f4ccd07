"""docs/extending.md runs as printed: a config names a schedule, a model, a hook and an
evaluator from a module outside the package."""

import json
import os
import re
import sys

import pytest

from alternating import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
    with open(os.path.join(ROOT, "docs", "extending.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.slow
def test_extending_page_runs_with_its_own_schedule_model_hook_and_evaluator(tmp_path, monkeypatch):
    files = {}
    run_blocks = []
    for block in _blocks():
        first = block.splitlines()[0]
        if first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = block
        else:
            run_blocks.append(block)
    assert set(files) == {"my_scheme.py", "my_config.py"} and len(run_blocks) == 1
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("my_scheme", "my_config"):
        sys.modules.pop(mod, None)
    scope = {}
    exec(compile(run_blocks[0], "docs/extending.md", "exec"), scope)
    state = scope["state"]
    # The schedule ran: 'head' on every 4th step.
    assert {k: int(v) for k, v in state.phase_steps.items()} == {"body": 150, "head": 50}
    with open(tmp_path / "runs" / "mine" / "results.json") as f:
        res = json.load(f)
    # Fused chunks (the default 'auto'), ended by the phase-end hook: no retrace.
    assert res["compiles"] == {"fused:4": 1, "fused:2": 1, "eval:test": 1}
    assert res["body_norm"] > 0 and res["final_eval"]["test"]["accuracy"] > 0.5
    assert res["schedule"] == {"name": "my_scheme:EveryKth", "k": 4}
    rows = [r for r in metrics.read_jsonl(tmp_path / "runs" / "mine" / "metrics.jsonl")
            if r.get("set") == "body_norm"]
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    # The hook ran at each end of a 'head' run (50 of them) and changed the head:
    # a run without it ends elsewhere.
    import alternating
    import my_config
    cfg = my_config.get_config()
    cfg.hooks = []
    plain = alternating.train_and_evaluate(cfg, str(tmp_path / "plain"), progress=False,
                                           print_fn=None)
    import numpy as np
    assert not np.allclose(plain.params["head"]["kernel"], state.params["head"]["kernel"])
