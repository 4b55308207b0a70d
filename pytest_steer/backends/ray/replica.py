"""A Ray replica's body: its own run (`session.run.SteerRun`) on the driver's cases and fitted state.

Imported when the backend starts, here and in each replica's worker process: it loads the engine (torch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...cache import RecordingStore
from ...generation import GenerationRequest
from ...session.run import ModelSettings, SteerRun, generation_to_record
from ...spec import RunSpec
from ...tasks import CaseSplit


def numerics(model: Any) -> str:
    """Device type and dtype: rows are cached under the driver's, so every replica must run the model alike."""
    return f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"


class Replica:
    """A Ray actor's body: loads the model once and generates shards of any spec's rows."""

    def __init__(self, model_settings: ModelSettings) -> None:
        self.run = SteerRun(model_settings)  # no cache: the pytest process writes every row

    def load(self) -> dict[str, str]:
        """Load the model now (not on the first shard), and say what was loaded where."""
        import ray

        m = self.run.model
        return {"identity": m.identity, "node": ray.get_runtime_context().get_node_id(), "numerics": numerics(m)}

    def generate(self, spec: RunSpec, split: CaseSplit, records: dict[str, Any],
                 shard: list[tuple[int, GenerationRequest]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        """Yield each finished batch as (row index, generation record) pairs."""
        run = self.run
        run.use_split(spec, split)  # the driver's cases, whatever files the replica can see
        if run.store is None:
            run.store = RecordingStore()
        run.store.records.update(records)  # the driver's fitted state: prepare() reads it, fits nothing
        engine = run.engine(spec)
        lengths = {i: sum(len(m["content"]) for m in engine.messages(r)) for i, r in shard}
        ordered = sorted(shard, key=lambda p: lengths[p[0]])  # less padding, as in one process
        for start in range(0, len(ordered), engine.batch_size):
            chunk = ordered[start:start + engine.batch_size]
            gens = engine.generate([r for _, r in chunk])
            run.keep_batch_size(spec, engine.batch_size)  # an out-of-memory halving sticks for the next shards
            yield [(i, generation_to_record(g)) for (i, _), g in zip(chunk, gens, strict=True)]
