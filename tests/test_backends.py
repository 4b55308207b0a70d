"""The backend registry: which backend the settings choose, one line for a bad choice, and each backend's
declared methods (the end-to-end runs are in test_extending.py and test_ray.py). What a test registers is gone
after it (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

import pytest_steer.backends as backends
from pytest_steer.backends import backend_name, build_backend, check_methods, register_backend
from pytest_steer.backends.local import LocalBackend
from pytest_steer.errors import UsageError
from pytest_steer.options import Option
from pytest_steer.spec import declared_options


def _settings(**given: Any) -> dict[str, Any]:
    return {**{o.name: o.default for o in declared_options()}, **given}


class OnlyPrompt(LocalBackend):
    name = "narrow"
    options = (Option("narrow_batches", int, 1, "batches"),)
    methods = ("prompt",)


@pytest.mark.parametrize(("given", "chosen"), [
    ({}, "local"),
    ({"ray": "auto"}, "ray"),  # --steer-ray ADDRESS selects Ray, as before there was a registry
    ({"backend": "ray"}, "ray"),
    ({"backend": "ray", "ray": "auto"}, "ray"),
    ({"backend": "local"}, "local"),
])
def test_the_settings_choose_one_backend(given: dict[str, Any], chosen: str) -> None:
    assert backend_name(_settings(**given)) == chosen


def test_ray_alone_by_name_starts_a_local_instance_and_building_it_starts_nothing() -> None:
    backend = build_backend(_settings(backend="ray", ray_replicas=3))
    assert (backend.name, backend.settings.address, backend.settings.replicas, backend.members) == ("ray", "local", 3,
                                                                                                    [])


def test_two_choices_that_disagree_are_one_line() -> None:
    with pytest.raises(UsageError, match=r"^--steer-backend local and --steer-ray choose different backends; "
                                         r"give one of them$"):
        backend_name(_settings(backend="local", ray="auto"))


def test_an_unknown_backend_names_the_registered_ones_and_the_nearest() -> None:
    with pytest.raises(UsageError, match=r"^--steer-backend rya: no backend 'rya'; registered: local, ray; did you "
                                         r"mean 'ray'\?"):
        build_backend(_settings(backend="rya"))


def test_a_method_a_backend_does_not_declare_is_refused_in_one_line() -> None:
    register_backend(OnlyPrompt)
    backend = build_backend(_settings(backend="narrow"))
    check_methods(backend, ["prompt"])
    with pytest.raises(UsageError, match=r"^backend 'narrow' cannot run steering method 'actadd' \(it runs "
                                         r"prompt\); drop actadd from --steer-methods or choose another"):
        check_methods(backend, ["prompt", "actadd"])
    check_methods(build_backend(_settings()), ["pasta", "actadd", "prompt"])  # local runs every method


def test_register_backend_refuses_a_built_in_name_and_foreign_option_names() -> None:
    class Shadow(LocalBackend):
        name = "ray"

    class Foreign(LocalBackend):
        name = "mine"
        options = (Option("batches", int, 1, "batches"),)

    with pytest.raises(ValueError, match="'ray' is a built-in backend's name"):
        register_backend(Shadow)
    with pytest.raises(ValueError, match=r"option 'batches' must be named mine_<param>"):
        register_backend(Foreign)
    assert "mine" not in backends.backend_names()
