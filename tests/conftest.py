from __future__ import annotations

import pytest

from pytest_steer.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct (converted once into the user cache)."""
    return load_model()
