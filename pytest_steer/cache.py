"""A content-addressed on-disk store of finished generations and scores, so reruns reuse them.

Each record is one JSON file named by the sha256 of its key's canonical JSON, under
`root/<kind>/<2 hex>/<hash>.json`. Files are written atomically (temp file in the same directory,
fsync, `os.replace`), so a crash or two pytest-xdist workers writing the same record never leave a
partial file behind. A record that fails its checks on read is reported, deleted and treated as a
miss, so the caller regenerates it instead of using bad data. Only JSON is ever read or written.
The cache only saves time: a directory that cannot be read or written costs a warning, never a run.

This is a leaf module (records and keys only): the engine turns its objects into records itself.

Keys name everything that determines a result: a wrong hit silently reuses a stale response,
while a needless miss only costs time, so when in doubt a field goes into the key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import open_lock_file, printable, read_manifest, report_files, write_atomically, write_manifest

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, work may be repeated (see ResultCache.lock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = 1
CACHE_ENV = "PYTEST_STEER_CACHE"
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RECORD_FIELDS = {"format", "key", "value", "checksum"}
_FINGERPRINT_ATTR = "_pytest_steer_fingerprint"
#: the manifest in each kind folder that says this package's cache wrote it (what `clear` may delete)
CACHE_MANIFEST = ".pytest-steer-cache.json"
LOCKS = "locks"
#: kind folders the release before manifests wrote; `clear` recognises them by name and their files by name
LEGACY_KINDS = frozenset({"generation", "score", "dose", "vectors", "layer-sweep", LOCKS})
#: the files of a kind folder that `clear` deletes, each by its exact name: records (if they read as records) in
#: the shard folder their hash names, temp files of interrupted writes (`files.write_atomically`'s, and the
#: release before's `mkstemp` ones), and in `locks/` empty lock files of `SteerRun`'s units
_SHARD = re.compile(r"[0-9a-f]{2}")
_RECORD_FILE = re.compile(r"([0-9a-f]{2})/\1[0-9a-f]{62}\.json")
_TEMP_FILE = re.compile(r"([0-9a-f]{2})/\.\1(?:[0-9a-f]{22}\.[0-9a-f]{8}|[0-9a-f]{14}\.[a-z0-9_]{8})\.tmp"
                        r"|\.\.pytest-steer-cache\.json\.[0-9a-f]{8}\.tmp")  # the last: the manifest's
_LOCK_FILE = re.compile(r"unit-[0-9a-f]{10}-trial[0-9]+\.lock")
#: how every record `put` writes begins (canonical JSON: sorted keys, no spaces)
_RECORD_START = re.compile(rb'\{"checksum":"[0-9a-f]{64}","format":')
_NAMED = 5  # kept paths named in clear's line; the rest are counted


def canonical_json(obj: Any, *, allow_nan: bool = False) -> str:
    """One text per JSON value: sorted keys, no whitespace, floats as Python's shortest round-trip repr.

    NaN and infinities are refused by default because they never compare equal to themselves.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=allow_nan, default=_json_scalar)


def _json_scalar(obj: Any) -> Any:
    """Accept numpy/torch scalars (np.float32, np.int64, np.bool_) that metrics tend to return."""
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable; cache keys and values must be plain JSON data")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_hash(key: Mapping[str, Any]) -> str:
    """The address of a record: sha256 of the key's canonical JSON (as it reads back, so (1, 2) and [1, 2] agree)."""
    return _sha256(canonical_json(_normalised(key)))


def _normalised(key: Mapping[str, Any]) -> Any:
    """The key as it reads back from JSON (tuples become lists, int dict keys strings)."""
    return json.loads(canonical_json(key))


@dataclass
class CacheStats:
    """Counters of one ResultCache; a corrupt or unreadable record counts as a miss too."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0
    unwritable: int = 0  # puts that failed (read-only directory, disk full, ...): the result was not stored

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResultCache:
    """JSON records addressed by the hash of their key, grouped by `kind` ("generation", "score-fluency").

    With `enabled=False` every get is a miss and put does nothing, so callers need no second code path.
    The cache only saves time, so a disk that refuses it never fails a run: a failed put or get logs
    one warning per cache and is counted, and the run goes on uncached.
    """

    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.stats = CacheStats()
        self._reported: set[Path] = set()
        self._warned: set[str] = set()
        self._marked: set[str] = set()  # kinds whose folder has its manifest

    def path(self, kind: str, key: Mapping[str, Any]) -> Path:
        """Where the record for `key` lives (whether or not it exists)."""
        h = key_hash(key)
        return _kind_dir(self.root, kind) / h[:2] / f"{h}.json"

    def get(self, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored value for `key`, or None (missing, disabled, unreadable, or corrupt and now deleted)."""
        if not self.enabled:
            self.stats.misses += 1
            return None
        path = self.path(kind, key)
        try:  # without blocking: a pipe at the record's path would otherwise wait for a writer for ever
            with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):  # not ours either: kept
                    self.stats.misses += 1
                    self._warn_once("read", f"cannot read {path} (not a plain file: a folder or a pipe); "
                                             "treating it as a miss")
                    return None
                raw = fh.read()
                identity = _file_identity(st)
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError as exc:
            self.stats.misses += 1
            self._warn_once("read", f"cannot read {path} ({_reason(exc)}); treating it as a miss")
            return None
        value, problem = _check_record(raw, _normalised(key))
        if problem is not None:
            self._discard(path, identity, problem)
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return value

    def put(self, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        """Store `value` under `key` atomically; the last of concurrent writers of one record wins whole.

        A value that is not JSON data raises (a bug in the caller); a disk that refuses the write does not.
        """
        if not self.enabled:
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"cache values must be JSON objects (mappings), got {type(value).__name__}")
        value = dict(value)
        record = {"format": FORMAT, "key": _normalised(key), "value": value,
                  "checksum": _sha256(canonical_json(value, allow_nan=True))}
        data = (canonical_json(record, allow_nan=True) + "\n").encode("utf-8")
        path = self.path(kind, key)
        try:
            self._mark(kind)
            write_atomically(path, data)
        except OSError as exc:
            self.stats.unwritable += 1
            self._warn_once("write", f"cannot write to {self.root} ({_reason(exc)}); "
                                     "results are not cached, the run goes on")
            return
        self.stats.writes += 1

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the lock `name` against every process sharing this cache (xdist workers, other sessions),
        so that one of them does a piece of work while the others wait and then read its records.

        Without file locks (no `fcntl`, a filesystem that refuses them) or a writable cache there is no
        lock: the work may then be done twice, never wrongly.
        """
        fh = None
        if self.enabled and fcntl is not None:
            try:
                path = _kind_dir(_kind_dir(self.root, LOCKS), f"{name}.lock")
                self._mark(LOCKS)
                fh = open_lock_file(path)  # closed below, which releases the lock
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except OSError as exc:
                if fh is not None:
                    fh.close()
                    fh = None
                self._warn_once("lock", f"cannot lock in {self.root} ({_reason(exc)}); workers may repeat work")
        try:
            yield
        finally:
            if fh is not None:
                fh.close()

    def check_writable(self) -> str | None:
        """Why records cannot be stored here, or None; tries a real file, for a warning at start-up."""
        if not self.enabled:
            return None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root) as fh:
                fh.write(b"x")
                fh.flush()
        except OSError as exc:
            return f"pytest-steer cache {self.root} is not writable ({_reason(exc)}); results will not be cached"
        return None

    def clear(self, kind: str | None = None) -> str | None:
        """Delete the records (and stray temp and lock files) of one kind, or of all kinds; only what this
        cache provably wrote goes, so a cache dir shared with other data (`~/.cache`, a project folder)
        loses nothing else.

        A kind folder is ours when it holds the manifest `put` writes into it, or, for caches written before
        manifests existed, when it has the name of a kind the package writes (`LEGACY_KINDS`); in it only
        what `_written_here` vouches for is deleted (records, temp files, `locks/`' empty lock files), then the
        folders left empty. Returns
        one line naming what was kept (other folders and files), or None. When deleting fails the cache is
        disabled for this run, so no record meant to be gone is reused.
        """
        kept: list[str] = []
        try:
            if kind is not None:
                folders = [_kind_dir(self.root, kind)]
            elif self.root.is_dir():
                report = report_files(self.root)  # a cache dir that is also the report dir: the report's are ours
                folders = sorted(p for p in self.root.iterdir() if p.name not in report or _is_ours(p))
            else:
                folders = []
            linked = []  # kind folders that are links: never followed to delete, so their records stay
            for folder in folders:
                if folder.is_symlink() and folder.is_dir() and _is_ours(folder):
                    linked.append(folder.name)
                    kept.append(f"{folder.name} (a link, not followed: its records are not cleared)")
                elif folder.is_symlink() or not folder.is_dir():
                    if folder.exists() or folder.is_symlink():
                        kept.append(folder.name)
                elif _is_ours(folder):
                    in_report = _in_a_report(folder)
                    kept += [f"{folder.name}/{rel}" for rel in _remove_records(folder) if not in_report(rel)]
                else:
                    kept.append(f"{folder.name}/")
        except (OSError, RecursionError) as exc:  # RecursionError: a user's folder nested past os.walk's depth
            self.enabled = False
            reason = _reason(exc) if isinstance(exc, OSError) else "a folder in it is nested too deep to walk"
            self._warn_once("clear", f"cannot clear {self.root} ({reason}); the cache is off for this run")
            return None
        self._marked.clear()
        if linked:  # as when deleting fails: no record meant to be gone is reused
            self.enabled = False
            self._warn_once("clear", f"cannot clear {', '.join(linked)} in {self.root} (a link, not followed); "
                                     "the cache is off for this run")
        if not kept:
            return None
        more = f" and {len(kept) - _NAMED} more" if len(kept) > _NAMED else ""
        return (f"pytest-steer cache: cleared {self.root}, but kept what it did not write there: "
                f"{printable(', '.join(kept[:_NAMED]))}{more}")

    def _mark(self, kind: str) -> None:
        """Write the manifest that makes a kind folder provably ours, before each record: read once per kind and
        cache object, then only checked to be there (one `stat`), since another session's clear removes it."""
        folder = _kind_dir(self.root, kind)
        if kind in self._marked and (folder / CACHE_MANIFEST).is_file():
            return
        if read_manifest(folder / CACHE_MANIFEST) is None:
            write_manifest(folder, name=CACHE_MANIFEST, kind=kind, what="pytest-steer result cache records")
        self._marked.add(kind)

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("pytest-steer cache: %s", message)

    def _discard(self, path: Path, identity: tuple[int, ...], problem: str) -> None:
        """Delete a bad record, unless a concurrent writer has already replaced it with a new file."""
        self.stats.corrupt += 1
        outcome = "deleted it; it will be regenerated"
        try:
            if _file_identity(os.stat(path)) == identity:
                path.unlink()
                with contextlib.suppress(OSError):  # its shard folder, if now empty: `clear` keeps empty ones
                    path.parent.rmdir()
            else:
                outcome = "a concurrent writer has replaced it since"
        except FileNotFoundError:
            pass
        except OSError as exc:
            outcome = f"could not delete it ({exc}); it will be regenerated"
        if path not in self._reported:
            self._reported.add(path)
            log.warning("pytest-steer cache: corrupt record %s: %s; %s", path, problem, outcome)


class RecordingStore:
    """What steering methods fit once (e.g. activation vectors), kept as JSON records so that the same
    state can be shipped to another process (a backend's replica) and served there from memory.

    Reads and writes go through to `backing` (the run's ResultCache) when there is one; every record read
    or written is also kept, by kind and key hash, in `records`, which is plain JSON data.
    """

    def __init__(self, backing: ResultCache | None = None, records: Mapping[str, Any] | None = None) -> None:
        self.backing = backing
        self.records: dict[str, Any] = dict(records or {})

    @staticmethod
    def _address(kind: str, key: Mapping[str, Any]) -> str:
        return f"{kind}/{key_hash(key)}"

    def get(self, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        address = self._address(kind, key)
        if address in self.records:
            return json.loads(canonical_json(self.records[address], allow_nan=True))  # a copy, as a read gives
        value = self.backing.get(kind, key) if self.backing is not None else None
        if value is not None:
            self.records[address] = value
        return value

    def put(self, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        self.records[self._address(kind, key)] = json.loads(canonical_json(dict(value), allow_nan=True))
        if self.backing is not None:
            self.backing.put(kind, key, value)


def hold_lock(path: Path) -> Any:
    """Take the lock file `path` without waiting: its open file (keep it open to hold the lock), or None
    when another process holds it. Without `fcntl`, or on a filesystem that refuses locks, every caller
    gets it. Raises OSError if it cannot be created."""
    fh = open_lock_file(path)  # closing it (or the process ending) releases the lock
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        except OSError as exc:  # e.g. ENOLCK on a network filesystem: unlocked, as without fcntl
            log.warning("pytest-steer: cannot lock %s (%s); concurrent sessions are not detected", path, _reason(exc))
    return fh


def _reason(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _is_ours(folder: Path) -> bool:
    manifest = read_manifest(folder / CACHE_MANIFEST)
    return (manifest is not None and manifest.get("kind") == folder.name) or folder.name in LEGACY_KINDS


def _remove_records(folder: Path) -> list[str]:
    """Delete the record, temp and lock files in `folder` and the shard folders they leave empty, then the
    manifest and `folder` itself if nothing else is left and it was ours to begin with (its manifest, or a record
    of ours in it: a user's empty folder named like an old kind stays). Links, a user's folders (empty or not)
    and files are kept; returns the paths kept (relative to `folder`)."""
    kept: list[str] = []
    marked = (folder / CACHE_MANIFEST).is_file()
    removed = 0
    for here, dirs, files in os.walk(folder, topdown=False):
        base = Path(here)
        emptied = False  # a shard folder goes only when it held records: an empty one may be the user's
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            rel = (base / name).relative_to(folder).as_posix()
            if name in dirs or (rel != CACHE_MANIFEST and not _written_here(folder, rel)):
                kept.append(rel)
            elif rel != CACHE_MANIFEST:
                with contextlib.suppress(FileNotFoundError):  # already gone, e.g. another worker cleared it
                    (base / name).unlink()
                removed += 1
                emptied = True
        if (emptied and base != folder and base.parent == folder and _SHARD.fullmatch(base.name)
                and not any(base.iterdir())):
            base.rmdir()
            removed += 1
        elif base != folder and not any(base.iterdir()):
            kept.append(base.relative_to(folder).as_posix() + "/")
    if not kept and (marked or removed):
        with contextlib.suppress(FileNotFoundError):
            (folder / CACHE_MANIFEST).unlink()
        with contextlib.suppress(FileNotFoundError):
            folder.rmdir()
    return kept


def _in_a_report(folder: Path) -> Callable[[str], bool]:
    """Whether a path `rel` kept in the kind folder `folder` is a file of a report dir inside it, at any depth,
    that the report's manifests name: ours, though not the cache's, so not named as the user's (a user's file
    there is). Each folder's report files are read once."""
    seen: dict[Path, set[str]] = {}

    def in_report(rel: str) -> bool:
        parts = rel.rstrip("/").split("/")
        for i in range(len(parts)):
            where = folder.joinpath(*parts[:i])
            if where not in seen:
                seen[where] = report_files(where)
            if parts[i] in seen[where]:
                return True
        return False

    return in_report


def _written_here(folder: Path, rel: str) -> bool:
    """Whether the file `rel` of the kind folder `folder` is one `put` or `lock` wrote: a record that reads as
    one (not merely a sha256-named JSON file of the user's), a temp file of an interrupted write, or an empty
    unit lock file in `locks/` (the only lock files the cache writes). A link, a pipe or a device is never one:
    `put` and `lock` write plain files (and opening a pipe to read it would wait for a writer for ever)."""
    path = folder / rel
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            return False
        if _TEMP_FILE.fullmatch(rel):
            return True
        if _LOCK_FILE.fullmatch(rel):
            return folder.name == LOCKS and st.st_size == 0
        if not _RECORD_FILE.fullmatch(rel):
            return False
        with open(path, "rb") as fh:
            return _RECORD_START.match(fh.read(128)) is not None
    except FileNotFoundError:  # already gone, e.g. another worker cleared it
        return True


def _kind_dir(root: Path, kind: str) -> Path:
    """A kind is one plain directory name, so it can never point outside the cache root."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"cache kind must be letters, digits, '.', '_' or '-', got {kind!r}")
    return root / kind


def _file_identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_record(raw: bytes, key: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(value, None) for a sound record of `key`, else (None, why it is unusable)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON (truncated or overwritten?): {exc}"
    if not isinstance(record, dict) or set(record) != _RECORD_FIELDS:
        return None, "not a pytest-steer cache record"
    if record["format"] != FORMAT:
        return None, f"unsupported record format {record['format']!r} (this version reads {FORMAT})"
    value = record["value"]
    if not isinstance(value, dict) or _sha256(canonical_json(value, allow_nan=True)) != record["checksum"]:
        return None, "checksum mismatch (the value was edited or damaged)"
    if record["key"] != key:
        return None, "the stored key differs from the requested one (edited file or hash collision)"
    return value, None


def cache_root() -> Path:
    """Where pytest-steer keeps converted models and results.

    `$PYTEST_STEER_CACHE` wins, then `$XDG_CACHE_HOME/pytest-steer`, then `~/.cache/pytest-steer`. A variable
    set to blanks counts as unset, as the XDG spec has it (`" "` is no folder anyone means).
    """
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV].strip()).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "pytest-steer"


def default_cache_dir() -> Path:
    """The results cache inside pytest-steer's user cache."""
    return cache_root() / "results"


# ---------------------------------------------------------------------------------------------
# Keys


@functools.cache
def numerics_versions() -> dict[str, str]:
    """Versions whose upgrades can change generated tokens or scores, so they invalidate the cache."""
    import torch
    import transformers

    from . import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "pytest_steer": __version__}


def generation_key(
    *,
    model_identity: str,
    tokenizer_fingerprint: str,
    case_hash: str,
    method_identity: Mapping[str, Any] | None,
    value: float | str | None,
    settings: Mapping[str, Any],
    trial: int,
    seed: int,
    dtype: str,
    device_type: str,
    attn_implementation: str,
) -> dict[str, Any]:
    """Everything that determines one generated text.

    `method_identity` is the steering method's name under "method" plus its `identity()` (layers, fitted
    vectors' hash, ...); it enters only steered rows (value not None): a baseline row is the same whatever
    method is swept, so changing the method's settings must not regenerate it. Numbers are keyed as
    floats (4 and 4.0 steer alike), text values (a prompt variant) as they are.
    `settings` should be the resolved GenerationSettings as a dict, `seed` the row's seed (`row_seed`),
    `attn_implementation` the kernel the model was loaded with ("sdpa", "eager").
    """
    if value is not None and (method_identity is None or "method" not in method_identity):
        raise ValueError("a steered row (value is not None) needs its method identity, with the method's name "
                         "under 'method', in the key")
    return {
        "model": model_identity,
        "tokenizer": tokenizer_fingerprint,
        "case": case_hash,
        "method": None if value is None else dict(method_identity or {}),
        "value": _key_value(value),
        "settings": dict(settings),
        "trial": int(trial),
        "seed": int(seed),
        "dtype": str(dtype).removeprefix("torch."),
        "device_type": device_type,
        "attn_implementation": attn_implementation,
        "versions": numerics_versions(),
    }


def _key_value(value: float | str | None) -> float | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"a steering value must be a number or text, got {value!r}")
    return float(value)


def score_key(
    *,
    scorer: str,
    scorer_identity: str,
    generation_key_hash: str,
    options: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Key of a score: scores live apart from generations, so changing the scorer does not regenerate.

    `extra` holds whatever else the score depends on, e.g. the baseline row's length for a length ratio.
    """
    return {
        "scorer": scorer,
        "scorer_identity": scorer_identity,
        "generation": generation_key_hash,
        "options": dict(options),
        "extra": dict(extra or {}),
        "versions": numerics_versions(),
    }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what turns a prompt into tokens and tokens back into text.

    Vocabulary and, for fast tokenizers, the whole backend (merges, normalizer, decoder, added tokens)
    are hashed once and remembered on the tokenizer; the chat template and special tokens, which
    callers may set after loading, are re-read on every call. The backend's padding and truncation
    state is left out: encoding a padded batch changes it, but not the tokens of a prompt.
    """
    size = len(tokenizer)
    cached = getattr(tokenizer, _FINGERPRINT_ATTR, None)
    if cached is None or cached[0] != size:
        parts: dict[str, Any] = {"vocab": sorted(tokenizer.get_vocab().items())}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            spec = json.loads(backend.to_str())
            spec.pop("padding", None)
            spec.pop("truncation", None)
            parts["backend"] = spec
        cached = (size, _sha256(canonical_json(parts, allow_nan=True)))
        setattr(tokenizer, _FINGERPRINT_ATTR, cached)
    return _sha256(canonical_json({
        "vocab": cached[1],
        "class": type(tokenizer).__name__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": getattr(tokenizer, "special_tokens_map", {}),
        "clean_up_tokenization_spaces": getattr(tokenizer, "clean_up_tokenization_spaces", None),
    }))
