"""Model identity: what the cache keys generations by."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_steer.models import load_model
from tests.tiny_models import tiny_model


def _snapshot(hub: Path, repo: str, commit: str, seed: int, tokenizer_dir: Path) -> None:
    """Lay out one commit of `repo` in an HF cache, as a download would, and point `main` at it."""
    import shutil

    root = hub / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    tiny_model(seed=seed).save_pretrained(snap)
    for f in tokenizer_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, snap / f.name)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_hub_model_is_identified_by_its_resolved_commit(tmp_path: Path, tiny_model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An updated checkpoint on the hub (main moved to a new commit) must not hit results cached from the old one."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    old, new = "a" * 40, "b" * 40
    _snapshot(hub, "org/tiny", old, 0, tiny_model_dir)
    first = load_model("org/tiny")
    assert first.identity == f"hub:org/tiny@{old}"
    _snapshot(hub, "org/tiny", new, 1, tiny_model_dir)
    second = load_model("org/tiny")
    assert second.identity == f"hub:org/tiny@{new}"
    assert not bool((first.model.lm_head.weight == second.model.lm_head.weight).all())  # the new weights loaded
