"""The bench scripts still run: a name moved in the package breaks the suite, not a user running a bench.

Every script is imported (its module body: every name it imports from the package must exist), and the
ones that can run small enough here run end to end on a tiny grid. The timings they print are not checked
(speed claims belong to the bench scripts themselves), only that they ran and printed their result line.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted((REPO / "bench").glob("bench_*.py"))


def test_the_bench_folder_holds_the_scripts_this_file_knows() -> None:
    assert [p.name for p in BENCHES] == ["bench_dose.py", "bench_generation.py", "bench_head_profile.py",
                                         "bench_layer_auto.py", "bench_quality.py", "bench_ray.py",
                                         "bench_startup.py"]


@pytest.mark.parametrize("path", BENCHES, ids=[p.stem for p in BENCHES])
def test_every_bench_script_imports_and_has_a_main(path: Path) -> None:
    if path.stem == "bench_ray":
        pytest.importorskip("ray", reason="bench_ray needs the [ray] extra (make test installs it)")
    namespace = runpy.run_path(str(path), run_name="bench_smoke")  # not "__main__": defines, does not run
    assert callable(namespace.get("main")), f"{path.name} has no main()"


def _run(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_bench_startup_runs_once(tmp_path: Path) -> None:
    out = _run("bench_startup.py", "--repeats", "1", tmp_path=tmp_path)
    assert "ratio with/without" in out and "should be none" not in out


def test_bench_dose_runs_on_two_cases_and_two_tokens(tmp_path: Path) -> None:
    out = _run("bench_dose.py", "--cases", "2", "--max-new-tokens", "2", tmp_path=tmp_path)
    assert "2 cases x 4 configs" in out and "dose / generation = " in out
    assert "mean dose (KL nats/token): pasta-alpha10 " in out


def test_bench_generation_runs_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = _run("bench_generation.py", "--model", str(tiny_model_dir), "--rows", "4", "--max-new-tokens", "2",
               "--repeats", "1", "--skip-reference", "--batch-size", "4", tmp_path=tmp_path)
    assert "(c) PASTA, alpha=10 on all rows" in out and "ratios: PASTA steered/unsteered (c/b) = " in out


def test_bench_quality_reads_a_results_table(tmp_path: Path) -> None:
    """Without the pair set (which scores thousands of answers), on a small results.jsonl with one loop."""
    import json

    answers = [("Paris is the capital of France, on the Seine.", 0.95), ("Lyon sits where two rivers meet.", 0.9),
               ("the the the the the the the the the the the the", 0.05), ("Bordeaux is known for wine.", 0.8)]
    rows = [{"response": text, "scores": {"quality": q}} for text, q in answers]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    out = _run("bench_quality.py", "results.jsonl", "--skip-pairs", tmp_path=tmp_path)
    assert "4 rows, 1 with rep-4 >= 0.5" in out and "[target <= 0: ok]" in out and "[target 0: ok]" in out


def test_bench_head_profile_runs_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = _run("bench_head_profile.py", "--model", str(tiny_model_dir), tmp_path=tmp_path)
    assert "profile (empty cache): " in out and "chosen: pasta: profiled heads " in out


def test_bench_layer_auto_runs_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = _run("bench_layer_auto.py", "--model", str(tiny_model_dir), "--types", "keywords:forbidden_words",
               tmp_path=tmp_path)
    assert "auto (empty cache): " in out and "keywords:forbidden_words (up to " in out and "chosen: actadd: " in out


def test_bench_ray_runs_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("ray", reason="bench_ray needs the [ray] extra (make test installs it)")
    out = _run("bench_ray.py", "--model", str(tiny_model_dir), "--replicas", "1", "--per-type", "1", "--trials", "1",
               "--max-new-tokens", "2", tmp_path=tmp_path)
    assert "rows identical to the serial run: yes" in out
