"""The Ray backend on a two-node cluster on this host (`ray.cluster_utils.Cluster`, 1 CPU per node): its rows are
the serial run's byte for byte, and losing a node mid-run loses no finished row and duplicates none."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.cache import ResultCache
from pytest_steer.results import ResultRow
from pytest_steer.session.run import ModelSettings, SteerRun
from pytest_steer.spec import RunSpec

ray = pytest.importorskip("ray")  # the [ray] extra; `make test` installs it, so CI runs these

from pytest_steer.backends.ray import RayBackend, RayBackendError, RaySettings  # noqa: E402

# every method, both trials; a 2-row batch makes a shard several batches, so a node can die mid-shard
SPEC = RunSpec(methods=("pasta", "actadd", "prompt"), alphas=(10.0,), actadd_coefs=(1.0,), prompt_variants=("restate",),
               trials=2, per_type=1, max_new_tokens=6, batch_size=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    # the head holds no CPU, so replicas land on the worker nodes; a dead node is noticed within ~2 s
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                                          "health_check_failure_threshold": 4}})
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def two_nodes(cluster: Any) -> Any:
    """The cluster with exactly two live 1-CPU worker nodes (a test before may have removed one)."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def _json(rows: list[ResultRow]) -> list[str]:
    return sorted(json.dumps(dataclasses.asdict(r), sort_keys=True) for r in rows)


@pytest.fixture(scope="module")
def serial(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    run = SteerRun(ModelSettings(str(tiny_model_dir)), ResultCache(tmp_path_factory.mktemp("serial-cache")))
    return _json([r for t in range(SPEC.trials) for r in run.rows(SPEC, t)])


def _ray_run(model_dir: Path, cache: Path, address: str) -> tuple[SteerRun, RayBackend]:
    backend = RayBackend(RaySettings(address, replicas=2, cpus_per_replica=1))
    run = SteerRun(ModelSettings(str(model_dir)), ResultCache(cache), backend=backend)
    backend.start(run)
    return run, backend


def _generation_records(cache: Path) -> int:
    return sum(1 for _ in (cache / "generation").glob("??/*.json"))  # records, not the manifest


def test_a_two_node_cluster_gives_the_serial_rows(two_nodes: Any, serial: list[str], tiny_model_dir: Path,
                                                  tmp_path: Path) -> None:
    run, backend = _ray_run(tiny_model_dir, tmp_path / "cache", two_nodes.address)
    try:
        assert len({m.node for m in backend.members}) == 2  # one replica per node
        rows = [r for t in range(SPEC.trials) for r in run.rows(SPEC, t)]
        per_replica = backend.rows_per_replica()
    finally:
        backend.close()
    assert _json(rows) == serial
    assert sum(per_replica.values()) == len(rows) == _generation_records(tmp_path / "cache")
    assert all(n > 0 for n in per_replica.values()), per_replica  # both replicas worked
    # a repeated run takes every row from the cache: no replica, no cluster
    again = SteerRun(ModelSettings(str(tiny_model_dir)), ResultCache(tmp_path / "cache"))
    assert _json([r for t in range(SPEC.trials) for r in again.rows(SPEC, t)]) == serial
    assert again.generated_rows == 0


def test_a_node_lost_mid_run_loses_no_row_and_duplicates_none(two_nodes: Any, serial: list[str],
                                                              tiny_model_dir: Path, tmp_path: Path) -> None:
    run, backend = _ray_run(tiny_model_dir, tmp_path / "cache", two_nodes.address)
    removed: list[str] = []

    def kill_a_busy_node(progress: Any) -> None:
        """After a replica's first batch (its shard has more to do), take its node down."""
        if removed:
            return
        busy = next(m for m in backend.members if m.rows > 0)
        node = next(n for n in two_nodes.worker_nodes if n.node_id.startswith(busy.node))
        two_nodes.remove_node(node)
        removed.append(busy.name)

    run.on_progress = kill_a_busy_node
    try:
        rows = [r for t in range(SPEC.trials) for r in run.rows(SPEC, t)]
        per_replica = {m.name: m.rows for m in backend.members}
        lost = list(backend.lost)
    finally:
        backend.close()
    assert len(lost) == 1 and lost[0].startswith(removed[0]), lost
    assert per_replica[removed[0]] > 0  # it had finished rows before it died: they were kept, not redone
    assert _json(rows) == serial  # complete and identical
    keys = [(r.key, r.config, r.trial) for r in rows]
    assert len(keys) == len(set(keys))
    assert sum(per_replica.values()) == len(rows) == _generation_records(tmp_path / "cache")  # each row arrived once


def test_an_unreachable_cluster_is_one_line_before_any_model_loads(tmp_path: Path, monkeypatch: Any) -> None:
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = RayBackend(RaySettings("127.0.0.1:1", replicas=1))
    run = SteerRun(ModelSettings("no-such-model-is-loaded"), ResultCache(tmp_path / "cache"), backend=backend)
    with pytest.raises(RayBackendError, match=r"^--steer-ray 127\.0\.0\.1:1: cannot reach a Ray cluster at "
                                              r"127\.0\.0\.1:1 \(Connection refused\); start it, or check the address"):
        backend.start(run)
    assert run._model is None


def test_a_cluster_too_small_is_one_line_before_any_replica_starts(two_nodes: Any, tmp_path: Path) -> None:
    backend = RayBackend(RaySettings(two_nodes.address, replicas=3, cpus_per_replica=1))
    run = SteerRun(ModelSettings("no-such-model-is-loaded"), ResultCache(tmp_path / "cache"), backend=backend)
    try:
        with pytest.raises(RayBackendError, match=r"has room for 2 replica\(s\) of 1 CPU\(s\) and 0 GPU\(s\) each, "
                                                  r"not the 3 asked; lower --steer-ray-replicas"):
            backend.start(run)
        assert backend.members == [] and run._model is None
    finally:
        backend.close()


def test_ray_with_xdist_is_refused_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(steer_eval):\n    pass\n")
    result = pytester.runpytest_subprocess("--steer-ray", "local", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-steer: --steer-ray and -n both spread generation over processes; "
                                 "use one (Ray replicas take the place of xdist workers)"])


def test_the_plugin_generates_on_the_cluster_and_reports_rows_per_replica(two_nodes: Any, pytester: pytest.Pytester,
                                                                         tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile(test_grid="def test_point(steer_result):\n    assert len(steer_result.rows) == 4\n")
    result = pytester.runpytest_subprocess(
        "--steer-model", str(tiny_model_dir), "--steer-methods", "pasta", "--steer-alphas", "10", "--steer-trials",
        "1", "--steer-per-type", "1", "--steer-max-new-tokens", "4", "--steer-cache-dir", str(tmp_path / "cache"),
        "--steer-ray", two_nodes.address, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["steer: generated 8/8 rows, *(replica-0@* *, replica-1@* *)"])
    assert _generation_records(tmp_path / "cache") == 8
