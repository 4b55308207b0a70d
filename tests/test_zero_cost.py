"""An installed pytest-steer costs nothing in a project that runs no steering tests.

The plugin autoloads into every pytest run of every project in the environment (the pytest11 entry
point), so it must import nothing heavy and write nothing there until a steering test is collected.
Each check runs pytest in a fresh subprocess on a throwaway project, as a user's `pytest` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pandas", "matplotlib", "scipy", "ray")
OUT_ENV = "PYTEST_STEER_ZERO_COST_OUT"

CONFTEST = f"""
import json
import os
import sys

import pytest


@pytest.hookimpl(trylast=True)  # after every plugin's own unconfigure: whatever they import is seen
def pytest_unconfigure(config):
    import pytest_steer

    seen = {{
        "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
        "steer_loaded": config.pluginmanager.hasplugin("steer"),
        "package": pytest_steer.__file__,
    }}
    with open(os.environ[{OUT_ENV!r}], "w", encoding="utf-8") as fh:
        json.dump(seen, fh)
"""


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (root / "test_a.py").write_text("def test_a():\n    assert 1 + 1 == 2\n", encoding="utf-8")
    return root


def _pytest(project: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run pytest in `project` as a user would (plugin autoloaded), with the working tree's package."""
    out = project.parent / "seen.json"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH"}}
    env.update({"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", OUT_ENV: str(out),
                "PYTEST_STEER_CACHE": str(project.parent / "steer-cache")})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    seen = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    return proc, seen


def test_a_run_without_steering_tests_imports_and_writes_nothing(project: Path) -> None:
    before = _tree(project)
    proc, seen = _pytest(project, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert seen["steer_loaded"], "the plugin did not autoload: is pytest-steer installed in this environment?"
    assert Path(seen["package"]).resolve().is_relative_to(REPO)
    assert seen["heavy"] == [], f"imported at start-up: {seen['heavy']}"
    assert _tree(project) == before  # no report directory, no cache, nothing
    assert not (project.parent / "steer-cache").exists()


def test_help_lists_the_options_without_importing_torch(project: Path) -> None:
    before = _tree(project)
    proc, seen = _pytest(project, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--steer-model" in proc.stdout
    assert seen["steer_loaded"] and seen["heavy"] == [], seen
    assert _tree(project) == before
