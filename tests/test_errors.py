"""One error family: every error pytest-steer raises on purpose is a `SteerError`, of the kind that says whose
fault it is, and keeps the built-in base old `except` clauses caught; a spec's grid is built once."""

from __future__ import annotations

import pytest

import pytest_steer.methods as methods
from pytest_steer.backends.ray import RayBackendError
from pytest_steer.baselines import BaselineMismatch
from pytest_steer.errors import ModelError, ScorerError, StartError, SteerError, TaskError, UsageError
from pytest_steer.methods import SteeringError
from pytest_steer.metrics.scorers import QualityScorerError
from pytest_steer.models import ModelLoadError
from pytest_steer.options import MarkerError
from pytest_steer.scores import ScorerError as ScoresScorerError
from pytest_steer.session import StartError as SessionStartError
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import CaseLoadError
from pytest_steer.tasks import TaskError as TasksTaskError


@pytest.mark.parametrize(("error", "family", "builtin"), [
    (SteeringError, UsageError, ValueError),
    (MarkerError, UsageError, ValueError),
    (BaselineMismatch, UsageError, ValueError),
    (CaseLoadError, TaskError, ValueError),
    (TasksTaskError, TaskError, ValueError),
    (ScoresScorerError, ScorerError, RuntimeError),
    (QualityScorerError, ScorerError, RuntimeError),
    (ModelLoadError, ModelError, RuntimeError),
    (RayBackendError, StartError, ValueError),
    (SessionStartError, StartError, ValueError),
])
def test_every_error_is_of_the_family_and_keeps_its_old_base(error: type[Exception], family: type[Exception],
                                                             builtin: type[Exception]) -> None:
    assert issubclass(error, family) and issubclass(error, SteerError) and issubclass(error, builtin)
    with pytest.raises(SteerError, match="one line"):
        raise error("one line")


def test_a_bad_grid_value_is_one_usage_error() -> None:
    with pytest.raises(UsageError, match=r"pasta alpha 0.0 must be > 0"):
        RunSpec(methods=("pasta",), alphas=(0.0,)).configs()


def test_a_spec_builds_its_grid_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = methods.build_method

    def counting(name, spec):  # type: ignore[no-untyped-def]
        built.append(name)
        return real(name, spec)

    monkeypatch.setattr(methods, "build_method", counting)
    spec = RunSpec(methods=("pasta", "prompt"), alphas=(5.0, 10.0), prompt_variants=("restate",))
    first = spec.configs()
    first.append(first[0])  # a caller's list is its own
    again = spec.configs()
    assert [c.label for c in again] == ["baseline", "pasta-alpha5", "pasta-alpha10", "prompt-restate"]
    assert spec.config("pasta-alpha10").value == 10.0
    assert built == ["pasta", "prompt"]
    assert RunSpec(methods=("pasta",), alphas=(5.0, 10.0)) == RunSpec(methods=("pasta",), alphas=(5.0, 10.0))


def test_the_family_is_public() -> None:
    import pytest_steer

    assert pytest_steer.SteerError is SteerError and "SteerError" in pytest_steer.__all__
