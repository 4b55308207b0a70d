"""The backend protocol: where a run's missing rows are generated, and what the run needs to know of it.

The run (`session.run.SteerRun`) looks every row up in the cache, hands the missing ones to its backend, and
caches and scores what comes back; model loading, the methods' `prepare`, the dose pass and scoring stay in
the run's process. So a backend only generates: in this process (`local`), on a cluster of replicas, or in
an engine of its own. It declares which steering methods it can run, since an engine that cannot edit attention
cannot run PASTA, and the run refuses any other at start-up, before the model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..generation import Generation, GenerationRequest
    from ..options import Option
    from ..session.run import SteerRun
    from ..spec import RunSpec


@runtime_checkable
class Backend(Protocol):
    """A backend. mypy checks the built-in ones against this protocol (tests/typing_methods.py)."""

    name: ClassVar[str]  # `--steer-backend NAME`
    options: ClassVar[tuple[Option, ...]]  # its own settings, each named NAME or NAME_<param>
    #: the steering methods it can run; None: every registered method (it runs the package's engine)
    methods: ClassVar[tuple[str, ...] | None]
    #: the option of its own that selects it when set (a cluster's address); None: only --steer-backend NAME
    selected_by: ClassVar[str | None]
    #: True: it gets every missing trial of a setting in one call (a cluster shards them); False: one trial at
    #: a time, when the tests first ask for it
    all_trials: ClassVar[bool]

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Backend:
        """Built from its own options' values; building starts nothing."""
        ...

    def check(self, *, xdist: bool) -> None:
        """Refuse, in one line (a `SteerError`), what it cannot run with before anything starts (e.g. -n)."""
        ...

    def start(self, run: SteerRun) -> None:
        """Get ready to generate `run`'s rows (after the run has loaded its model and prepared its methods)."""
        ...

    def generate(self, run: SteerRun, spec: RunSpec, requests: Sequence[GenerationRequest],
                 on_batch: Callable[[list[Generation]], None]) -> None:
        """Generate `requests`, handing each finished batch, built on the given request objects, to `on_batch`
        once; the run caches and scores them as they arrive."""
        ...

    def close(self) -> None:
        """Release what `start` took; called once at the end, also after a failed or skipped start."""
        ...

    def meta(self) -> dict[str, str]:
        """What the report's run details say about where the rows were generated."""
        ...
