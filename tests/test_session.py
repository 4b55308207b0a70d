"""The run's score cache: an edited scorer re-scores cached rows instead of returning its old values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pytest_steer.cache import ResultCache
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import FunctionScorer, Sample
from pytest_steer.session import SteerRun
from pytest_steer.tasks import Case


def _scorer_from(path: Path, body: str) -> FunctionScorer:
    """`judge` as the user's module defines it now (written, then imported afresh, like a new session)."""
    path.write_text(f"from pytest_steer import scorer\n\n@scorer('ok')\ndef judge(sample):\n    {body}\n")
    spec = importlib.util.spec_from_file_location("user_scorers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    judge: FunctionScorer = module.judge
    return judge


def test_a_fixed_scorer_is_not_served_its_old_cached_scores(tmp_path: Path) -> None:
    run = SteerRun(cache=ResultCache(tmp_path / "cache"))
    case = Case("c1", "Say hi.")
    samples = [Sample(case, BASELINE_CONFIG, case.prompt, "hi", 1, "stop")]
    broken = _scorer_from(tmp_path / "user_scorers.py", "return False")
    assert run._scored(broken, samples, ["gen-1"])[0].values == {"ok": 0.0}
    fixed = _scorer_from(tmp_path / "user_scorers.py", "return sample.response == 'hi'")
    assert (fixed.name, fixed.version) == (broken.name, broken.version)
    assert run._scored(fixed, samples, ["gen-1"])[0].values == {"ok": 1.0}
    # unchanged code still hits the cache
    again = _scorer_from(tmp_path / "user_scorers.py", "return sample.response == 'hi'")
    assert again.identity() == fixed.identity()
