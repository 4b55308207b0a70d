"""The Ray backend's cost on one machine: the default grid (`make eval`'s: pasta, actadd and prompt at one value
each, two trials) generated serially in this process, then on a local Ray instance with two replicas.

Both generate every row of the grid with the cache off (what Ray spreads; scoring, the dose pass and the
report are central and the same either way) and must give the same rows. Printed: each side's wall time,
their ratio, the replicas' start-up (connect, start, load the model) apart, and the rows each replica
generated. On 2 CPU cores no speed-up is expected (each replica gets one core where the serial run had two):
the figure is the overhead. With --repeats N the medians are printed.

    python bench/bench_ray.py                      # the default grid: 16 cases x 4 configs x 2 trials
    python bench/bench_ray.py --per-type 1 --max-new-tokens 32   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pytest_steer.backends.ray import RayBackend, RaySettings
from pytest_steer.cache import ResultCache
from pytest_steer.session.run import ModelSettings, SteerRun
from pytest_steer.spec import RunSpec


def _texts(run: SteerRun, spec: RunSpec) -> list[tuple[str, str, int, str]]:
    gens = [g for t in range(spec.trials) for g in run._generations[(spec, t)][0]]
    return sorted((g.request.case.key, g.request.config.label, g.request.trial, g.text) for g in gens)


def _generate(run: SteerRun, spec: RunSpec) -> float:
    start = time.perf_counter()
    run._generations.update(run._generate_units(spec, range(spec.trials)))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--per-type", type=int, default=4)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    spec = RunSpec(methods=("pasta", "actadd", "prompt"), alphas=(10.0,), actadd_coefs=(1.0,),
                   prompt_variants=("restate",), trials=args.trials, per_type=args.per_type,
                   max_new_tokens=args.max_new_tokens)
    settings = ModelSettings(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        off = ResultCache(Path(tmp), enabled=False)
        serial_runs, ray_runs, starts = [], [], []
        for _ in range(args.repeats):
            serial = SteerRun(settings, off)
            serial.prepare([spec])  # model, cases, vectors: outside the timing, as on the Ray side
            serial_runs.append(_generate(serial, spec))

            backend = RayBackend(RaySettings("local", replicas=args.replicas, cpus_per_replica=1))
            distributed = SteerRun(settings, off, backend=backend)
            distributed.prepare([spec])
            t0 = time.perf_counter()
            backend.start(distributed)
            starts.append(time.perf_counter() - t0)
            try:
                ray_runs.append(_generate(distributed, spec))
                per_replica = backend.rows_per_replica()
            finally:
                backend.close()
            assert _texts(serial, spec) == _texts(distributed, spec), "the Ray rows differ from the serial rows"
    rows = sum(per_replica.values())
    s, r, st = statistics.median(serial_runs), statistics.median(ray_runs), statistics.median(starts)
    print(f"grid: {len(serial.cases(spec))} cases x {len(spec.configs())} configs x {spec.trials} trials = {rows} rows,"
          f" max_new_tokens {spec.max_new_tokens}; {os.cpu_count()} CPU cores; load {os.getloadavg()[0]:.2f}")
    print(f"serial generation:       {s:7.1f} s")
    print(f"Ray, {args.replicas} replicas:         {r:7.1f} s   (start-up apart: {st:.1f} s)")
    print(f"ratio Ray / serial:      {r / s:7.2f}   (with start-up: {(r + st) / s:.2f})")
    print("rows per replica:        " + ", ".join(f"{k} {n}" for k, n in per_replica.items()))
    print("rows identical to the serial run: yes")


if __name__ == "__main__":
    main()
