"""The default backend: generate in this process, on the run's own model, one trial at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..generation import Generation, GenerationRequest
    from ..options import Option
    from ..session.run import SteerRun
    from ..spec import RunSpec


class LocalBackend:
    """The run's own engine (`generation.GenerationEngine`): any method, no start-up, nothing to close."""

    name: ClassVar[str] = "local"
    options: ClassVar[tuple[Option, ...]] = ()
    methods: ClassVar[tuple[str, ...] | None] = None
    selected_by: ClassVar[str | None] = None
    all_trials: ClassVar[bool] = False

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> LocalBackend:
        return cls()

    def check(self, *, xdist: bool) -> None:
        """xdist workers each run a local backend of their own."""

    def start(self, run: SteerRun) -> None:
        """Nothing to start: the run has loaded the model."""

    def generate(self, run: SteerRun, spec: RunSpec, requests: Sequence[GenerationRequest],
                 on_batch: Callable[[list[Generation]], None]) -> None:
        engine = run.engine(spec)
        engine.generate(requests, on_batch=on_batch, on_progress=run.on_progress)
        run.keep_batch_size(spec, engine.batch_size)  # an out-of-memory halving sticks for the next units

    def close(self) -> None:
        """Nothing to release."""

    def meta(self) -> dict[str, str]:
        return {}
