"""Checked by mypy in `make lint`, not collected by pytest: the package's exports reach type checkers as
their real types, not `Any`.

Each function below returns a value of the wrong type, silenced by its `# type: ignore[...]`. Were the
name `Any`, there would be no error, and mypy (with `warn_unused_ignores`, see pyproject.toml) would fail
on the unused ignore. So this file passes only while every name is a real type.
"""

from __future__ import annotations

from pytest_steer import EvalResult, GridPoint, RunSpec, SteerEval, SteeringMethod, Task, scorer


def _eval_result(result: EvalResult) -> int:
    return result.label  # type: ignore[return-value]


def _steer_eval(sweep: SteerEval) -> int:
    return sweep.spec  # type: ignore[return-value]


def _method(method: SteeringMethod) -> int:
    return method.name  # type: ignore[return-value]


def _task(task: Task) -> int:
    return task.primary  # type: ignore[return-value]


def _grid_point(point: GridPoint) -> int:
    return point.label  # type: ignore[return-value]


def _spec(spec: RunSpec) -> str:
    return spec.trials  # type: ignore[return-value]


def _scorer() -> None:
    scorer(42)  # type: ignore[arg-type]
