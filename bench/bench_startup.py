"""Start-up overhead of the plugin: what pytest-steer adds to every pytest run of a project that has it installed.

The plugin autoloads through its pytest11 entry point into projects that run no steering test, so its
import and hooks must cost next to nothing there. This times `python -m pytest -q -p no:cacheprovider
test_a.py` (one trivial test) in a throwaway directory, with the plugin and with `-p no:steer`, after one
warm-up each, interleaved (with, without, with, ...) so that drift hits both alike, and prints the
medians, the overhead and the ratio. The directory is removed afterwards; PYTHONDONTWRITEBYTECODE and
a throwaway PYTEST_STEER_CACHE keep anything from being written elsewhere.

    python bench/bench_startup.py              # 5 runs each
    python bench/bench_startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "def test_a():\n    assert 1 + 1 == 2\n"


def _run(cwd: Path, env: dict[str, str], extra: list[str]) -> float:
    """Wall time of one pytest run; exits with its output if the run fails."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "test_a.py"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each variant (default 5)")
    args = parser.parse_args()

    variants = {"with pytest-steer": [], "-p no:steer": ["-p", "no:steer"]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="steer-startup-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "test_a.py").write_text(TEST, encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if k not in {"PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}}
        env.update({"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTEST_STEER_CACHE": str(Path(tmp) / "steer-cache")})
        for extra in variants.values():  # warm-up: file system cache, nothing timed
            _run(project, env, extra)
        for _ in range(args.repeats):
            for name, extra in variants.items():
                times[name].append(_run(project, env, extra))
        ours = {project, project / "test_a.py"}
        left = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p not in ours)

    with_plugin, without = (statistics.median(times[name]) for name in variants)
    print(f"pytest start-up, one trivial test, median of {args.repeats} interleaved runs after a warm-up "
          f"({sys.executable}, {os.cpu_count()} CPUs)")
    for name, runs in times.items():
        print(f"  {name:<18} {statistics.median(runs):7.3f} s   runs: {' '.join(f'{t:.3f}' for t in runs)}")
    print(f"  overhead           {with_plugin - without:+7.3f} s   ratio with/without: {with_plugin / without:.2f}x")
    if left:
        print(f"  files the runs left in the project or cache (should be none): {left}")


if __name__ == "__main__":
    main()
