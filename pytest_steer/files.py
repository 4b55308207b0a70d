"""Files this package writes: atomically, with the user's umask, and marked by manifests.

A manifest (a small JSON file naming this package) is how a clean-up proves a folder is ours: the result
cache's kind folders and the report dir's run folders carry one, and only what a manifest vouches for is
ever deleted. This module imports nothing from the package (the cache, a leaf, uses it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

_REPLACE_RETRIES = 5
WRITTEN_BY = "pytest-steer"
#: the manifest of a folder of one run's report files (the report dir itself, or a `run-<key>/` in it)
RUN_MANIFEST = ".pytest-steer-run.json"
#: the manifest of the last session in the report dir: which folders hold its runs, and the pages written there
REPORT_MANIFEST = ".pytest-steer-report.json"
#: the lock file a session holds in its report dir (one session per report dir)
REPORT_LOCK = ".pytest-steer.lock"


def write_atomically(path: Path, data: str | bytes) -> Path:
    """Write `data` to a temp file beside `path`, then rename it over `path`: a full or read-only disk
    leaves the previous file or none, never a cut-off file that looks complete. Raises OSError.

    The temp file is created with mode 0o666 less the umask, as `open()` would create the file, so a
    shared cache or a served report is as readable as the user's other files (mkstemp's 0600 is not).
    The one atomic write of the package: results, report files and cache records all go through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _create_temp(path: Path) -> tuple[int, str]:
    """A new file `.<name>.<random>.tmp` beside `path`, opened for writing with mode 0o666 & ~umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name[:24]}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:  # the folder went meanwhile (a cache shard emptied by another process)
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(f"could not create a temp file beside {path}")


def _replace(src: str, dst: Path) -> None:
    """os.replace, retried briefly: Windows refuses it onto a file another process has open for a moment."""
    for attempt in range(_REPLACE_RETRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == _REPLACE_RETRIES - 1:
                raise
            time.sleep(0.01 * 2**attempt)


def printable(text: str) -> str:
    """`text` with each character a terminal would act on (escape codes, newlines) written as its Python
    escape: file names of the user's are named in one terminal line, and must neither break it nor drive the
    terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def write_manifest(folder: Path, name: str = RUN_MANIFEST, **fields: Any) -> Path:
    """Mark `folder` as written by this package, with `fields` (e.g. the files it wrote there)."""
    return write_atomically(Path(folder) / name,
                            json.dumps({"written_by": WRITTEN_BY, **fields}, indent=1, sort_keys=True) + "\n")


#: a manifest lists one folder's files: one larger than this is not ours, and is not read whole
_MAX_MANIFEST_BYTES = 16 * 2**20


def open_plain(path: Path, flags: int = os.O_RDONLY) -> int:
    """`os.open` that never waits and opens only a plain file: a pipe at a path of ours would block a read until
    a writer comes and a write until a reader does (for ever), a device may never end. A file it creates gets
    0o666 less the umask, as `open()` gives. Returns the descriptor; raises OSError."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP):  # a pipe nobody reads; a link, where O_NOFOLLOW was asked
            raise OSError(f"{path} is not a plain file (a link, a pipe or a device)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a plain file (a folder, a pipe or a device)")
    return fd


def open_lock_file(path: Path) -> Any:
    """The lock file `path`, created if missing, opened to append (never truncated), as a binary file object;
    raises OSError when it cannot be, or is a link (never followed: it would create a file elsewhere) or not a
    plain file (`open_plain`)."""
    return os.fdopen(open_plain(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)), "ab")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path` if this package wrote it (None: absent, unreadable, not a plain file, too large to
    be a manifest, or someone else's)."""
    try:
        with os.fdopen(open_plain(path), "rb") as fh:
            raw = fh.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:
            return None
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == WRITTEN_BY else None


def report_files(folder: Path) -> set[str]:
    """The names directly in `folder` that its report manifests say pytest-steer's report wrote there (pages,
    results files, run folders marked by their own manifest), with the manifests and the report's lock: what
    a cache clear in a cache dir that is also the report dir need not name as someone else's."""
    folder = Path(folder)
    report, run = read_manifest(folder / REPORT_MANIFEST), read_manifest(folder / RUN_MANIFEST)
    names = {n for m in (report, run) if m for n in m.get("files") or () if isinstance(n, str)}
    if report or run:
        names |= {REPORT_MANIFEST, RUN_MANIFEST, REPORT_LOCK}
    with contextlib.suppress(OSError):
        names |= {p.name for p in folder.iterdir() if not p.is_symlink() and p.is_dir()
                  and (m := read_manifest(p / RUN_MANIFEST)) is not None and m.get("run") is not None}
    return names
