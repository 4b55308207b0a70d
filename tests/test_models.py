"""Model identity (what the cache keys generations by) and the start-up checks of --steer-model/--steer-device."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_steer import models
from pytest_steer.files import write_manifest
from pytest_steer.models import (
    EMBEDDED_INSTALL,
    EMBEDDED_PACKAGE,
    ModelLoadError,
    check_device,
    check_source,
    load_model,
)
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


# ---------------------------------------------------------------------------------------------
# Start-up checks: one line at once, no model loaded, no network beyond one probe


_HINT = "; use auto, cpu or cuda[:N]"


def _no_probe() -> bool:
    raise AssertionError("the hub was probed")


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """No offline variables set; the probe must be patched by the test. What `go_offline` switches is restored."""
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "0")  # recorded, so that teardown removes what go_offline sets
        monkeypatch.delenv(var)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


def _one_line(exc: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("model", ["embedded", "", None])
def test_embedded_needs_its_package(monkeypatch: pytest.MonkeyPatch, model: str | None) -> None:
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == EMBEDDED_PACKAGE else real(name, *a))
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    with pytest.raises(ModelLoadError) as exc:
        check_source(model)
    assert EMBEDDED_INSTALL in _one_line(exc)


@pytest.mark.parametrize("value", ["/no/such/model", "./missing-model", "~/missing-model-xyz", "a/b/c", "C:\\models\\x",
                                   "bad id"])
def test_missing_directory_fails_at_once(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    with pytest.raises(ModelLoadError) as exc:
        check_source(value)
    assert _one_line(exc) == f"--steer-model {value}: no such directory"


def test_a_file_is_not_a_model_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.gguf").write_bytes(b"")
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    with pytest.raises(ModelLoadError) as exc:
        check_source(str(tmp_path / "model.gguf"))
    assert _one_line(exc).startswith(f"--steer-model {tmp_path / 'model.gguf'}: not a directory")


def test_existing_directories_pass_without_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    (tmp_path / "mymodel").mkdir()
    monkeypatch.chdir(tmp_path)
    check_source(str(tmp_path))
    check_source("mymodel")  # looks like a hub id, but a directory of that name wins, as in load_model
    check_source("./mymodel")


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("model", ["org/tiny-model", "gpt2"])
def test_hub_id_while_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    with pytest.raises(ModelLoadError) as exc:
        check_source(model)
    assert _one_line(exc) == (f"--steer-model {model}: cannot reach the Hugging Face hub to load it (the Hugging "
                              "Face hub at https://huggingface.co is not reachable) and it is not in the local HF "
                              "cache; give a local directory or 'embedded'")


@pytest.mark.usefixtures("online")
def test_hub_messages_keep_the_revision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 29: `--steer-model org/tiny@v2` was reported as 'org/tiny', and `embedded@main` was advised 'embedded'
    as if that were a different thing from what was typed."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    with pytest.raises(ModelLoadError, match=r"^--steer-model org/tiny-model@v2: cannot reach the Hugging Face hub"):
        check_source("org/tiny-model@v2")
    with pytest.raises(ModelLoadError) as exc:
        check_source("embedded@main")
    assert _one_line(exc) == ("--steer-model embedded@main: the embedded model has no revisions; give 'embedded', "
                              "or a hub id with the revision it should load (org/name@revision)")


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("model", ["embeded", "Embedded", "embedd"])
def test_a_near_miss_of_embedded_is_a_typo_not_a_hub_id(monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    with pytest.raises(ModelLoadError, match=rf"^model {model}: .*did you mean 'embedded'\?"):
        check_source(model, option="model")


@pytest.mark.usefixtures("online")
def test_hub_id_online_is_asked_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str | None, str]] = []
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    monkeypatch.setattr(models, "_hub_answer", lambda name, rev, kind, option: asked.append((name, rev, kind)))
    assert check_source("org/tiny-model@v2") is None
    assert check_source("org/cases", option="--steer-dataset", kind="dataset") is None
    assert check_source("./cases", option="--steer-dataset", kind="dataset") is None  # a path: the loader's
    assert asked == [("org/tiny-model", "v2", "model"), ("org/cases", None, "dataset")]


@pytest.mark.usefixtures("online")
@pytest.mark.parametrize("var, value", [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "true"),
                                        ("HF_HUB_OFFLINE", "YES")])
def test_offline_variables_are_honoured_without_probing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        var: str, value: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(models, "hub_reachable", _no_probe)
    monkeypatch.setenv(var, value)
    with pytest.raises(ModelLoadError, match=r"org/tiny: cannot reach the Hugging Face hub to load it \(offline\)"):
        check_source("org/tiny")


@pytest.mark.usefixtures("online")
def test_offline_hub_id_in_the_local_hf_cache_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    snap = hub / "models--org--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (hub / "models--org--tiny" / "refs").mkdir()
    (hub / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    assert check_source("org/tiny") == ("the Hugging Face hub at https://huggingface.co is not reachable: using the "
                                        "local HF cache only (HF_HUB_OFFLINE=1 for this run)")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE  # the rest of the run loads offline
    assert check_source("org/tiny") is None  # said once
    with pytest.raises(ModelLoadError, match="offline"):
        check_source("org/tiny", revision="v2")  # that revision was never downloaded
    with pytest.raises(ModelLoadError, match="offline"):
        check_source("org/other")


class _FakeConnect:
    """Stands in for socket.create_connection: records calls, then opens, refuses or hangs."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.calls: list[tuple[tuple[str, int], float]] = []
        self.release = threading.Event()

    def __call__(self, address: tuple[str, int], timeout: float) -> socket.socket:
        self.calls.append((address, timeout))
        if self.outcome == "hang":  # a name lookup that never answers: create_connection's timeout misses it
            self.release.wait(30)
        if self.outcome != "open":
            raise OSError("unreachable")
        return socket.socket()


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    models.hub_reachable.cache_clear()

    def install(outcome: str) -> _FakeConnect:
        fake = _FakeConnect(outcome)
        monkeypatch.setattr(models.socket, "create_connection", fake)
        return fake

    yield install
    models.hub_reachable.cache_clear()


def test_hub_probe_is_one_short_connect_per_process(probe: Any) -> None:
    fake = probe("open")
    assert models.hub_reachable() and models.hub_reachable() and models.hub_reachable()
    assert fake.calls == [(("huggingface.co", 443), models.HUB_PROBE_TIMEOUT_S)]
    assert models.HUB_PROBE_TIMEOUT_S <= 2


def test_hub_probe_refused_means_offline(probe: Any) -> None:
    fake = probe("refuse")
    assert not models.hub_reachable() and not models.hub_reachable()
    assert len(fake.calls) == 1  # no retry


def test_hub_probe_gives_up_on_a_hanging_name_lookup(probe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "HUB_PROBE_TIMEOUT_S", 0.05)
    fake = probe("hang")
    try:
        assert not models.hub_reachable()
    finally:
        fake.release.set()


def test_hub_probe_follows_the_endpoint_and_the_proxy(probe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert models._hub_address() == ("hf-mirror.example", 8443)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    fake = probe("open")
    assert models.hub_reachable()
    assert fake.calls[0][0] == ("proxy.example", 3128)


@pytest.mark.parametrize("device", ["nonsense", "", "CUDA", "cuda0", "cuda:", "cuda:-1", "cpu:0", "auto:1", "gpu"])
def test_unparseable_device(device: str) -> None:
    with pytest.raises(ModelLoadError) as exc:
        check_device(device)
    assert _one_line(exc) == f"--steer-device {device}: not a device{_HINT}"


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_auto_and_cpu_always_pass(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    _gpus(monkeypatch, 0)
    check_device(device)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    _gpus(monkeypatch, 0)
    with pytest.raises(ModelLoadError) as exc:
        check_device(device)
    message = _one_line(exc)
    assert message.startswith(f"--steer-device {device}: CUDA is not available") and message.endswith(_HINT)


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 2)
    check_device("cuda")
    check_device("cuda:1")
    with pytest.raises(ModelLoadError) as exc:
        check_device("cuda:2")
    assert _one_line(exc) == f"--steer-device cuda:2: only 2 CUDA device(s) visible (cuda:0 to cuda:1){_HINT}"


def test_mps_without_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ModelLoadError) as exc:
        check_device("mps")
    assert _one_line(exc) == f"--steer-device mps: MPS is not available on this machine{_HINT}"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_device("mps")


def test_start_up_checks_import_no_torch(tmp_path: Path) -> None:
    """The checks run before anything heavy: a bad value must cost a fraction of a second, not a torch import."""
    code = (
        "import sys\n"
        "from pytest_steer.models import ModelLoadError, check_device, check_source\n"
        f"check_source({str(tmp_path)!r}); check_device('auto'); check_device('cpu')\n"
        "for bad in (lambda: check_device('nonsense'), lambda: check_source('/no/such/dir')):\n"
        "    try:\n"
        "        bad()\n"
        "    except ModelLoadError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_interrupted_conversion_is_cleaned_up_and_nothing_else(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe round 4 of issue 29: a run killed while converting the embedded model left its temp folder (up to
    517 MB) in the cache's models/ folder, and every later interrupted first run another one, never cleaned. Under
    the conversion lock, the temp folders of killed conversions into the same target go; anything else stays."""
    monkeypatch.setenv("PYTEST_STEER_CACHE", str(tmp_path))
    converted: list[Path] = []

    def convert(gguf: Path, target: Path) -> None:  # the real one dequantizes 517 MB
        (target / "config.json").parent.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        converted.append(target)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    digest = models._file_digest(models.embedded_gguf_path())
    name = f"smollm2-135m-instruct-{digest[:12]}-v{models._CONVERSION_VERSION}"
    killed = tmp_path / "models" / f"{name}.tmp-k1ll3d_x"
    killed.mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"\0" * 1024)
    write_manifest(killed, models._CONVERSION_MARK, written_in=os.path.abspath(killed))
    # probe round 7: a converted model renamed to keep it has an mkdtemp-like name too, and was deleted
    renamed, moved = tmp_path / "models" / f"{name}.tmp-original", tmp_path / "models" / f"{name}.tmp-20261206"
    shutil.copytree(killed, moved)  # a leftover copied (its manifest names the folder it was written in)
    noted = tmp_path / "models" / f"{name}.tmp-n0t3s_1n"  # probe round 9: a killed leftover the user wrote into
    shutil.copytree(killed, noted)
    write_manifest(noted, models._CONVERSION_MARK, written_in=os.path.abspath(noted))
    kept = [tmp_path / "models" / f"{name}.tmp-notes.txt", tmp_path / "models" / "mine" / "config.json",
            tmp_path / "models" / f"{name}.tmp-longer-than-mkdtemp" / "x", renamed / "config.json",
            moved / "notes.txt", noted / "my-notes.txt"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    target, _ = models.embedded_model_dir()
    assert converted == [target] and target.name == name
    assert not killed.exists()
    assert all(path.read_text() == "mine" for path in kept)
    models.embedded_model_dir()  # converted: nothing more happens
    assert converted == [target]


def test_a_cache_variable_naming_a_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe round 7: `PYTEST_STEER_CACHE` set to a file ended the session in an INTERNALERROR traceback
    (NotADirectoryError from the conversion); now one line names the folder and the variable to set."""
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    monkeypatch.setenv("PYTEST_STEER_CACHE", str(mine))
    with pytest.raises(models.ModelLoadError, match="set PYTEST_STEER_CACHE to a folder you can write"):
        models.embedded_model_dir()
    assert mine.read_text() == "mine"
