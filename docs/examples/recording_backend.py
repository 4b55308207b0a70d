"""docs/extending.md's worked backend: generates in this process, like `local`, and records every call.

A conftest.py holding this module makes `--steer-backend recording` work; `tests/test_extending.py` runs it.
"""

# --8<-- [start:backend]
import json
from pathlib import Path

from pytest_steer import Option, register_backend
from pytest_steer.backends.local import LocalBackend


class RecordingBackend(LocalBackend):
    """The local engine, with each call the run makes appended to a JSON-lines file."""

    name = "recording"  # --steer-backend recording
    # its own settings, named recording or recording_<param>: --steer-recording-log, ini steer_recording_log
    options = (Option("recording_log", str, "backend-calls.jsonl", "recording: the file each call is added to",
                      marker=False),)
    methods = ("prompt",)  # what it can run (None: every method); the run refuses any other at start-up
    selected_by = None  # no option of its own selects it: only --steer-backend recording
    all_trials = False  # the run asks for one trial at a time

    def __init__(self, log):
        self.log = Path(log)

    @classmethod
    def from_options(cls, values):  # its own options' values only; building starts nothing
        return cls(values["recording_log"])

    def start(self, run):  # after the run has loaded its model and prepared its methods
        self._write({"call": "start", "model": run.model.identity})

    def generate(self, run, spec, requests, on_batch):  # the missing rows; each finished batch goes to on_batch
        self._write({"call": "generate", "rows": len(requests), "configs": sorted({r.config.label for r in requests})})
        super().generate(run, spec, requests, on_batch)

    def close(self):  # once, at the end
        self._write({"call": "close"})

    def meta(self):  # the report's run details
        return {"backend": f"recording, calls in {self.log}"}

    def _write(self, record):
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
# --8<-- [end:backend]


# --8<-- [start:register]
register_backend(RecordingBackend)
# --8<-- [end:register]
