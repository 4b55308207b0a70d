"""Generation on a Ray cluster: replicas, each holding the model once, generate a run's missing rows,
sharded by case, and stream them back to the pytest process, which caches, scores and reports them.

Ray is imported in this package only, and only when the backend starts (`pip install 'pytest-steer[ray]'`);
importing this module is free, since `pytest --help` reads its options. Ray does the scheduling, transport and
failure detection; this backend decides what a shard is and what to do with a lost one:

- A shard is a group of cases with every config and trial of them still missing, so a replica runs
  them in the same mixed batches as one process does and never loads a second model. Rows do not
  depend on their batch partners (per-row seeds), so any sharding gives the serial run's rows.
- Each finished batch streams back (a Ray streaming generator); the run writes it to the cache at once.
- A replica or node that dies loses only its unfinished rows: they go back on the queue for the
  replicas left, and a row that already arrived is never taken twice.
- Prepared state (e.g. activation vectors) is fitted once, in the pytest process, and its JSON records
  are shipped to every replica (`cache.RecordingStore`): see docs/ray.md for why.
"""

from __future__ import annotations

import argparse
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import StartError
from ...options import Option, parse_fraction, parse_positive_int, parse_positive_number

if TYPE_CHECKING:
    from ...generation import Generation, GenerationRequest
    from ...session.run import SteerRun
    from ...spec import RunSpec

log = logging.getLogger(__name__)

#: shards per replica: a lost replica's redone work is at most a quarter of its share, and the last
#: shards to finish (the run's tail) are small, while each shard still fills whole batches on a big grid
SHARDS_PER_REPLICA = 4
#: how long replicas may take to be placed and load the model before the run gives up, in seconds
START_TIMEOUT_S = 900.0
_PROBE_TIMEOUT_S = 10.0


def parse_ray_address(value: Any) -> str:
    """ "local" (start a Ray instance here), "auto" (the running cluster) or an address (host:port, ray://...)."""
    text = str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{value!r} is not local, auto or a Ray cluster address (host:port or "
                                         "ray://host:10001)")
    return text


RAY_OPTIONS: tuple[Option, ...] = (
    Option(
        "ray",
        parse_ray_address,
        None,
        "generate on a Ray cluster, sharded by case: local (start one here), auto (the running cluster) or its "
        "address; needs pip install 'pytest-steer[ray]'",
        marker=False,
    ),
    Option("ray_replicas", parse_positive_int, 2, "Ray replicas, each loading the model once", marker=False),
    Option("ray_gpus_per_replica", parse_fraction, 0.0, "GPUs each Ray replica reserves", marker=False),
    Option("ray_cpus_per_replica", parse_positive_number, 1.0, "CPUs each Ray replica reserves", marker=False),
)


class RayBackendError(StartError):
    """The cluster cannot run this evaluation (unreachable, too small, replicas lost); one line, for the user."""


@dataclass(frozen=True)
class RaySettings:
    """Where and how big: `address` is "local", "auto" or a cluster address."""

    address: str = "local"
    replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0


@dataclass
class _Member:
    name: str
    actor: Any
    node: str = ""
    rows: int = 0
    alive: bool = True


@dataclass
class RayBackend:
    """`backends.base.Backend` on Ray: start() checks the cluster and loads the replicas, generate() shards."""

    name: ClassVar[str] = "ray"
    options: ClassVar[tuple[Option, ...]] = RAY_OPTIONS
    methods: ClassVar[tuple[str, ...] | None] = None  # replicas run the package's engine: every method
    selected_by: ClassVar[str | None] = "ray"  # --steer-ray ADDRESS
    all_trials: ClassVar[bool] = True  # shards hold every trial of their cases

    settings: RaySettings = field(default_factory=RaySettings)
    members: list[_Member] = field(default_factory=list, init=False)
    lost: list[str] = field(default_factory=list, init=False)  # one line per replica lost
    _connected_here: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> RayBackend:
        """`--steer-backend ray` without `--steer-ray` starts a Ray instance here."""
        return cls(RaySettings(values["ray"] or "local", values["ray_replicas"], values["ray_cpus_per_replica"],
                               values["ray_gpus_per_replica"]))

    # -- start-up -----------------------------------------------------------------------------------

    def check(self, *, xdist: bool) -> None:
        if xdist:
            raise RayBackendError("--steer-ray and -n both spread generation over processes; use one "
                                  "(Ray replicas take the place of xdist workers)")

    def start(self, run: SteerRun) -> None:
        """Connect, check the cluster has room for the replicas, start them and check they loaded the run's
        model; RayBackendError (one line) otherwise. Costs the model loads, before any generation."""
        ray = _import_ray()
        from .replica import Replica, numerics

        s = self.settings
        where = f"--steer-ray {s.address}"
        if not ray.is_initialized():
            _probe(ray, s.address)
            try:
                ray.init(address=s.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise RayBackendError(f"{where}: cannot reach a Ray cluster: {_first_line(exc)}") from None
            self._connected_here = True
        room = _room(ray.nodes(), s.cpus_per_replica, s.gpus_per_replica)
        if room < s.replicas:
            raise RayBackendError(
                f"{where}: the cluster has room for {room} replica(s) of {s.cpus_per_replica:g} CPU(s) and "
                f"{s.gpus_per_replica:g} GPU(s) each, not the {s.replicas} asked; lower --steer-ray-replicas or "
                "the per-replica resources, or add nodes")
        remote = ray.remote(Replica).options(num_cpus=s.cpus_per_replica, num_gpus=s.gpus_per_replica,
                                             max_restarts=0, max_task_retries=0)
        self.members = [_Member(f"replica-{k}", remote.remote(run.model_settings)) for k in range(s.replicas)]
        pending = {m.actor.load.remote(): m for m in self.members}
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=START_TIMEOUT_S)
        if late:
            raise RayBackendError(f"{where}: {len(late)} replica(s) did not start within {START_TIMEOUT_S:.0f} s "
                                  "(resources taken by other jobs, or a slow model load)")
        want = run.model.identity
        for ref in ready:
            m = pending[ref]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise RayBackendError(f"{where}: {m.name} could not load model {run.model_settings.model!r}: "
                                      f"{_first_line(exc)}") from None
            m.node = info["node"][:8]
            if info["identity"] != want:
                raise RayBackendError(f"{where}: {m.name} on node {m.node} loaded a different model ({info['identity']}"
                                      f" vs {want} here); replicas must see the same model files (docs/ray.md)")
            if info["numerics"] != numerics(run.model):  # rows are cached under this process's device and dtype
                raise RayBackendError(f"{where}: {m.name} runs the model as {info['numerics']}, this process as "
                                      f"{numerics(run.model)}; run pytest on a node of the replicas' kind, or set "
                                      "--steer-device/--steer-dtype so that both agree (docs/ray.md)")

    def close(self) -> None:
        """End the replicas, and the Ray connection if start() made it."""
        if not self.members and not self._connected_here:
            return
        ray = _import_ray()
        for m in self.members:
            if m.alive:
                ray.kill(m.actor)
        self.members = []
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False

    # -- the work -----------------------------------------------------------------------------------

    def generate(self, run: SteerRun, spec: RunSpec, requests: Sequence[GenerationRequest],
                 on_batch: Callable[[list[Generation]], None]) -> None:
        """Generate `requests` on the replicas, handing each arriving batch to `on_batch` once."""
        from ...generation import Progress
        from ...session.run import generation_from_record

        ray = _import_ray()
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                       ray.exceptions.NodeDiedError, ray.exceptions.OwnerDiedError, ray.exceptions.ObjectLostError)
        run.methods(spec)  # fitted here once; replicas get the records
        split_ref = ray.put(run.split(spec))
        records_ref = ray.put(dict(run.store.records) if run.store is not None else {})
        queue = deque(shards(requests, len(self.alive()) * SHARDS_PER_REPLICA))
        idle = self.alive()
        running: dict[Any, tuple[_Member, set[int]]] = {}
        done, tokens, start = 0, 0, time.perf_counter()
        while queue or running:
            while queue and idle:
                m, shard = idle.pop(0), queue.popleft()
                gen = m.actor.generate.options(num_returns="streaming").remote(
                    spec, split_ref, records_ref, [(i, requests[i]) for i in shard])
                running[gen] = (m, set(shard))
            if not running:
                raise RayBackendError(f"--steer-ray: every replica was lost ({'; '.join(self.lost)}); the "
                                      f"{done} rows that finished are cached: rerun to go on from there")
            (gen,), _ = ray.wait(list(running), num_returns=1)
            m, left = running[gen]
            try:
                batch = ray.get(next(gen))
            except StopIteration:
                del running[gen]
                idle.append(m)
                if left:  # a replica that ends a shard early is a bug of ours; the rows are not lost
                    queue.append(sorted(left))
                continue
            except lost_errors as exc:
                del running[gen]
                m.alive = False
                self.lost.append(f"{m.name} on node {m.node}: {_first_line(exc)}")
                log.warning("pytest-steer: lost Ray %s with %d rows unfinished; they go to the other replicas",
                            self.lost[-1], len(left))
                if left:
                    queue.appendleft(sorted(left))
                continue
            fresh = [generation_from_record(requests[i], rec) for i, rec in batch if i in left]
            left.difference_update(i for i, _ in batch)
            m.rows += len(fresh)
            done += len(fresh)
            tokens += sum(g.n_tokens for g in fresh)
            on_batch(fresh)
            if run.on_progress is not None:
                run.on_progress(Progress(done, len(requests), tokens, time.perf_counter() - start,
                                         per_replica=self.rows_per_replica()))

    def alive(self) -> list[_Member]:
        return [m for m in self.members if m.alive]

    def rows_per_replica(self) -> dict[str, int]:
        return {f"{m.name}@{m.node}": m.rows for m in self.members}

    def meta(self) -> dict[str, str]:
        """For the report: where the rows were generated."""
        out = {"ray": f"{self.settings.address}, {len(self.members)} replica(s): "
                      + ", ".join(f"{k} {n} rows" for k, n in self.rows_per_replica().items())}
        if self.lost:
            out["ray replicas lost"] = "; ".join(self.lost)
        return out


def shards(requests: Sequence[GenerationRequest], n: int) -> list[list[int]]:
    """Request indices grouped by case (every config and trial of a case in one shard), in about `n` shards."""
    by_case: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_case.setdefault(r.case.key, []).append(i)
    groups = list(by_case.values())
    size = math.ceil(len(groups) / max(1, min(n, len(groups)))) if groups else 1
    return [[i for g in groups[k:k + size] for i in g] for k in range(0, len(groups), size)]


def _room(nodes: Sequence[dict[str, Any]], cpus: float, gpus: float) -> int:
    """How many replicas of (cpus, gpus) the live nodes hold, each replica on one node."""
    total = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        fits = math.floor(res.get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            fits = min(fits, math.floor(res.get("GPU", 0) / gpus + 1e-9))
        total += fits
    return total


def _probe(ray: Any, address: str) -> None:
    """Refuse an address nothing listens on: ray.init retries one for minutes, a TCP connect answers in seconds."""
    where = f"--steer-ray {address}"
    if address == "local":
        return
    target = address
    if address == "auto":  # RAY_ADDRESS, or the cluster started on this machine
        try:
            target = ray._private.services.canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise RayBackendError(f"{where}: cannot reach a Ray cluster: {_first_line(exc)}") from None
        except AttributeError:  # a Ray without this helper: ray.init finds it, or fails in its own time
            return
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayBackendError(f"{where}: give local, auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise RayBackendError(f"{where}: cannot reach a Ray cluster at {host}:{port} "
                              f"({exc.strerror or type(exc).__name__}); start it, or check the address") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayBackendError("--steer-ray needs Ray: pip install 'pytest-steer[ray]'") from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
