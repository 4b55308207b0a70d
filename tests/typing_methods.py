"""Checked by mypy, not collected by pytest: each built-in method must satisfy the SteeringMethod protocol, and
each built-in backend the Backend protocol.

    .venv/bin/python -m mypy pytest_steer tests/typing_methods.py

fails as soon as a method's signature or class attributes drift from `methods.base.SteeringMethod` (a
backend's from `backends.base.Backend`).
"""

from __future__ import annotations

from pytest_steer.backends.base import Backend
from pytest_steer.backends.local import LocalBackend
from pytest_steer.backends.ray import RayBackend
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.base import SteeringMethod
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.prompt import PromptEmphasis

pasta: SteeringMethod = PASTA()
pasta_heads: SteeringMethod = PASTA(layers={8: [0, 1]}, scale_position="exclude")
actadd: SteeringMethod = ActivationSteering()
actadd_layer: SteeringMethod = ActivationSteering(layer=3)
prompt: SteeringMethod = PromptEmphasis()

local: Backend = LocalBackend()
ray: Backend = RayBackend()
