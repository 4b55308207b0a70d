"""The run: one object per process that owns the model, the task's cases, the steering methods, the
scorers, the cache and the result rows.

It is plain Python (no pytest import) so that notebooks and scripts can run a sweep the same way
the plugin does:

    run = SteerRun(ModelSettings())
    rows = run.rows(RunSpec(methods=("pasta", "prompt"), trials=2), trial=0)

Work is done per unit = (run spec, trial): every config of that trial (the baseline and every
method's values) for every case, generated together in mixed batches. Units are the same under
pytest-xdist as in a serial run, so the numbers are too. The missing rows go to the run's backend (`backends`:
this process by default), which hands them back to be cached and scored here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import check_methods
from ..backends.base import Backend
from ..backends.local import LocalBackend
from ..cache import (
    RecordingStore,
    ResultCache,
    default_cache_dir,
    generation_key,
    key_hash,
    score_key,
    tokenizer_fingerprint,
)
from ..dose import DOSE, OFF_TARGET_DOSE
from ..evaluation import EvalResult, check_metric_names
from ..generation import (
    Generation,
    GenerationEngine,
    GenerationRequest,
    GenerationSettings,
    Progress,
    grid_requests,
    row_seed,
)
from ..methods import BASELINE, GridPoint, PrepareContext, SteeringError, SteeringMethod, build_method, method_entry
from ..models import LoadedModel, load_model
from ..results import ResultRow
from ..scores import QUALITY_ROLE, Metric, Sample, Score, Scorer, metrics_of, registered_scorers
from ..spec import RunSpec
from ..tasks import CaseSplit, Task, get_task, task_options
from ..tasks.base import CaseSet

#: bump when the dose computation changes; _DOSE_ROWS steered rows share one teacher-forced pass
DOSE_FORMAT = 1
OFF_TARGET_FORMAT = 1
_DOSE_ROWS = 7

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """Process-wide model options (one model per process)."""

    model: str = "embedded"
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    trust_remote_code: bool = False


def generation_to_record(g: Generation) -> dict[str, Any]:
    return {"text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason, "seed": g.seed}


def generation_from_record(request: GenerationRequest, record: Mapping[str, Any]) -> Generation:
    """A cached generation; ValueError if the record does not have the expected shape."""
    try:
        text, n, finish, seed = record["text"], record["n_tokens"], record["finish_reason"], record["seed"]
    except KeyError as exc:
        raise ValueError(f"cached generation lacks {exc}") from None
    if not (isinstance(text, str) and isinstance(n, int) and finish in ("stop", "length") and isinstance(seed, int)):
        raise ValueError("cached generation has fields of the wrong type")
    return Generation(request, text, n, finish, seed)


def _split_key(spec: RunSpec) -> tuple[Any, ...]:
    """The task and the values of the options it declares: what decides its cases."""
    return (spec.task, tuple((o.name, spec[o.name]) for o in task_options(spec.task)))


def _methods_key(spec: RunSpec) -> tuple[Any, ...]:
    """The cases, and each method's own declared options: what a prepared method depends on."""
    return (*_split_key(spec), spec.on_missing,
            tuple((name, tuple(method_entry(name).values(spec).items())) for name in spec.methods))


def _scorer_key(spec: RunSpec) -> tuple[Any, ...]:
    return (spec.task, spec.quality, spec.quality_batch_size, spec.reward_max_length, spec.reward_tf32,
            tuple(s.name for s in registered_scorers()))


def with_budgets(metrics: Sequence[Metric], spec: RunSpec) -> list[Metric]:
    """The declarations with the run's budgets on them. One budget per phenomenon: the headline quality may
    drop by --steer-max-quality-drop. The offline headline already pays for repetition (its repetition
    factor), so a repetition budget would fail a looping config twice; a reward model or fluency may not
    see loops, so there the repetition rise keeps its own budget. Diversity counts repeated n-grams too
    and carries none."""
    out = []
    for m in metrics:
        if m.role == QUALITY_ROLE:
            m = dataclasses.replace(m, budget=spec.max_quality_drop)
        elif m.name == "repetition" and spec.quality != "offline":
            m = dataclasses.replace(m, budget=spec.max_repetition_rise)
        out.append(m)
    return out


@dataclass
class SteerRun:
    """Loads once, generates each unit once, scores, caches, and keeps every row it produced."""

    model_settings: ModelSettings = field(default_factory=ModelSettings)
    cache: ResultCache | None = None
    on_progress: Callable[[Progress], None] | None = None
    backend: Backend = field(default_factory=LocalBackend)  # where missing rows are generated
    # what the methods fitted in prepare(), read and written through the cache: a backend ships it to replicas
    store: RecordingStore | None = None
    _model: LoadedModel | None = field(default=None, init=False, repr=False)
    _splits: dict[tuple[Any, ...], CaseSplit] = field(default_factory=dict, init=False, repr=False)
    _methods: dict[tuple[Any, ...], dict[str, SteeringMethod]] = field(default_factory=dict, init=False, repr=False)
    _scorers: dict[tuple[Any, ...], list[Scorer]] = field(default_factory=dict, init=False, repr=False)
    _units: dict[tuple[RunSpec, int], list[ResultRow]] = field(default_factory=dict, init=False, repr=False)
    # a unit's generations, kept apart from its rows: a scorer that fails never costs a regeneration
    _generations: dict[tuple[RunSpec, int], tuple[list[Generation], list[str]]] = field(
        default_factory=dict, init=False, repr=False)
    # (generation hash, scorer name) -> why that scorer failed on that row; the row's scores are missing
    _failures: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)
    scorer_failures: list[str] = field(default_factory=list, init=False)  # one line per failed (row, scorer)
    _batch_sizes: dict[RunSpec, int] = field(default_factory=dict, init=False, repr=False)  # after OOM halving
    _results: dict[tuple[RunSpec, str, int | None], EvalResult] = field(default_factory=dict, init=False, repr=False)
    generated_rows: int = field(default=0, init=False)  # rows that really went through the model
    cached_rows: int = field(default=0, init=False)  # rows taken from the cache
    generation_seconds: float = field(default=0.0, init=False)
    generated_tokens: int = field(default=0, init=False)
    dose_rows: int = field(default=0, init=False)  # steered rows whose dose went through the model
    off_target_rows: int = field(default=0, init=False)  # (case, config) pairs whose off-target dose did
    dose_seconds: float = field(default=0.0, init=False)

    # -- resources ---------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            s = self.model_settings
            self._model = load_model(s.model, device=s.device, dtype=s.dtype, attn_implementation=s.attn,
                                     trust_remote_code=s.trust_remote_code)
        return self._model

    def task(self, spec: RunSpec) -> Task:
        return get_task(spec.task)

    def split(self, spec: RunSpec) -> CaseSplit:
        """The evaluated and held-out cases of this spec's task (loaded once)."""
        k = _split_key(spec)
        if k not in self._splits:
            self._splits[k] = self.task(spec).load(spec)
        return self._splits[k]

    def use_split(self, spec: RunSpec, split: CaseSplit) -> None:
        """Take `split` as this spec's cases: a backend's replica gets the driver's, whatever files it can see."""
        self._splits[_split_key(spec)] = split

    def cases(self, spec: RunSpec) -> CaseSet:
        return self.split(spec).evaluated

    def methods(self, spec: RunSpec) -> dict[str, SteeringMethod]:
        """The spec's steering methods, prepared (model checked, cases checked, vectors fitted)."""
        k = _methods_key(spec)
        if k not in self._methods:
            split = self.split(spec)
            if self.store is None:
                self.store = RecordingStore(self.cache)
            ctx = PrepareContext(self.model, tuple(split.evaluated), split.held_out, self.store, spec.on_missing,
                                 _layer_sweep_tools(self.model, self.task(spec), spec.max_new_tokens)
                                 if spec["actadd_layer"] == "auto" or spec["layers"] == "profile" else {},
                                 task=self.task(spec))
            built = {name: build_method(name, spec) for name in spec.methods}
            for name, m in built.items():
                try:
                    m.prepare(ctx)
                except SteeringError:
                    raise
                except Exception as exc:
                    if type(m).__module__.startswith("pytest_steer."):
                        raise  # a bug of ours: keep its traceback
                    # a user's method: one line at start-up, not an INTERNALERROR
                    raise SteeringError(f"steering method {name!r} failed in prepare(): "
                                        f"{type(exc).__name__}: {exc}") from exc
            self._methods[k] = built
        return self._methods[k]

    def scorers(self, spec: RunSpec) -> list[Scorer]:
        """The task's scorers, the scorers registered for every task, then the quality and side-effect scorers."""
        k = _scorer_key(spec)
        if k not in self._scorers:
            from ..metrics.scorers import quality_scorers

            self._scorers[k] = [*self.task(spec).scorers, *registered_scorers(), *quality_scorers(
                spec.quality, self.model, batch_size=spec.quality_batch_size, max_length=spec.reward_max_length,
                tf32=spec.reward_tf32, offers=self.task(spec))]
            check_metric_names(metrics_of(self._scorers[k]))  # a name declared twice or taken fails here
        return self._scorers[k]

    def metrics(self, spec: RunSpec) -> list[Metric]:
        """The scorers' metrics, then the dose every steered row gets (`pytest_steer.dose`), with the run's
        budgets on them."""
        return with_budgets([*metrics_of(self.scorers(spec)), DOSE, OFF_TARGET_DOSE], spec)

    def settings(self, spec: RunSpec) -> GenerationSettings:
        s = GenerationSettings(
            max_new_tokens=spec.max_new_tokens, do_sample=not spec.greedy, temperature=spec.temperature,
            top_p=spec.top_p, top_k=spec.top_k, seed=spec.seed, static_cache=spec.static_cache,
        )
        return s.resolved(self.model.model)

    def batch_size(self, spec: RunSpec) -> int:
        """"auto" starts large on CUDA and lets out-of-memory halving find the size; on CPU 32 (bench/README.md)."""
        if spec.batch_size != "auto":
            return int(spec.batch_size)
        return 512 if self.model.device.type == "cuda" else 32

    def engine(self, spec: RunSpec) -> GenerationEngine:
        return GenerationEngine(self.model.model, self.model.tokenizer, self.methods(spec), self.settings(spec),
                                batch_size=self._batch_sizes.get(spec, self.batch_size(spec)))

    def keep_batch_size(self, spec: RunSpec, size: int) -> None:
        """The batch size an engine ended with: an out-of-memory halving sticks for the spec's next batches."""
        self._batch_sizes[spec] = size

    def requests(self, spec: RunSpec, trial: int) -> list[GenerationRequest]:
        return grid_requests(self.cases(spec), spec.configs(), [trial])

    def prepare(self, specs: Iterable[RunSpec]) -> None:
        """Fail fast: load the model, cases, methods and scorers, and check them, before generating."""
        for spec in dict.fromkeys(specs):
            spec.configs()
            check_methods(self.backend, spec.methods)  # before the model loads
            check_metric_names(metrics_of(self.task(spec).scorers))  # before the model loads
            self.split(spec)  # the cases too: a bad case file or an unknown type fails before the model loads
            self.engine(spec).check_context(self.requests(spec, 0))  # every trial renders the same prompts
            for s in self.scorers(spec):
                s.check()

    # -- the work ------------------------------------------------------------------------------

    def _generation_key(self, spec: RunSpec, req: GenerationRequest, settings: dict[str, Any]) -> dict[str, Any]:
        m = self.model
        cfg = req.config
        methods = self.methods(spec)
        pairs = cfg.steering()
        identity: dict[str, Any] | None = None
        if len(pairs) == 1 and pairs[0] == (cfg.method, cfg.value):
            identity = {"method": cfg.method, **methods[cfg.method].identity()}
        elif pairs:  # a combined config or a method's setting as its own series: every part's method and value
            identity = {"method": cfg.method, "parts": [{"method": m, **methods[m].identity(), "value": v}
                                                        for m, v in pairs]}
        return generation_key(
            model_identity=m.identity, tokenizer_fingerprint=tokenizer_fingerprint(m.tokenizer),
            case_hash=req.case.content_hash(), method_identity=identity, value=cfg.value, settings=settings,
            trial=req.trial, seed=row_seed(spec.seed, req.case.key, req.trial), dtype=str(m.dtype),
            device_type=m.device.type, attn_implementation=self.model_settings.attn,
        )

    def rows(self, spec: RunSpec, trial: int) -> list[ResultRow]:
        """Every row of one trial: all cases under the baseline and every config. Generated at most once."""
        unit = (spec, trial)
        if unit not in self._units:
            # one process at a time per unit: another xdist worker (or session) sharing the cache waits,
            # then finds every row and score cached, whatever pytest-xdist's scheduling did
            with self.cache.lock(f"unit-{spec.key()}-trial{trial}") if self.cache else contextlib.nullcontext():
                if unit not in self._generations:
                    # a cluster gets every trial not generated yet in one go; this process, the one asked for
                    trials = [t for t in range(spec.trials) if (spec, t) not in self._generations] \
                        if self.backend.all_trials else [trial]
                    self._generations.update(self._generate_units(spec, trials))
                gens, hashes = self._generations[unit]
                self._units[unit] = self._score(spec, gens, hashes, self._doses(self.engine(spec), gens, hashes),
                                                self._off_target_doses(spec, gens))
        return self._units[unit]

    def _generate_units(self, spec: RunSpec, trials: Sequence[int]
                        ) -> dict[tuple[RunSpec, int], tuple[list[Generation], list[str]]]:
        settings = dataclasses.asdict(self.settings(spec))
        settings["batch_size_independent"] = True  # rows don't depend on batch partners (per-row seeding)
        requests = [r for t in trials for r in self.requests(spec, t)]
        keys = [self._generation_key(spec, r, settings) for r in requests]
        gens: dict[int, Generation] = {}
        missing: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys, strict=True)):
            rec = self.cache.get("generation", key) if self.cache else None
            if rec is not None:
                try:
                    gens[i] = generation_from_record(req, rec)
                    continue
                except ValueError as exc:
                    log.warning("ignoring a bad cached generation for %s: %s", req.case.key, exc)
            missing.append(i)
        self.cached_rows += len(requests) - len(missing)

        if missing:
            index = {id(requests[i]): i for i in missing}

            def persist(batch: list[Generation]) -> None:
                for g in batch:
                    i = index[id(g.request)]
                    gens[i] = g
                    if self.cache:
                        self.cache.put("generation", keys[i], generation_to_record(g))

            start = time.perf_counter()
            self.backend.generate(self, spec, [requests[i] for i in missing], persist)
            self.generation_seconds += time.perf_counter() - start
            self.generated_rows += len(missing)
            self.generated_tokens += sum(gens[i].n_tokens for i in missing)
        n = len(requests) // len(trials)
        hashes = [key_hash(k) for k in keys]
        return {(spec, t): ([gens[i] for i in range(j * n, (j + 1) * n)], hashes[j * n:(j + 1) * n])
                for j, t in enumerate(trials)}

    def _doses(self, engine: GenerationEngine, gens: Sequence[Generation], hashes: Sequence[str]) -> list[float]:
        """Each row's dose (`dose.doses`; 0 for the baseline), from the cache where it has it."""
        from ..dose import doses

        base = {g.request.case.key: i for i, g in enumerate(gens) if g.request.config.is_baseline}
        out = [0.0 if g.request.config.is_baseline else math.nan for g in gens]
        todo: dict[str, list[int]] = {}
        for i, g in enumerate(gens):
            b = base.get(g.request.case.key)
            if g.request.config.is_baseline or b is None:
                continue
            key = {"format": DOSE_FORMAT, "steered": hashes[i], "baseline": hashes[b]}
            rec = self.cache.get("dose", key) if self.cache else None
            if rec is not None and isinstance(rec.get("kl"), float):
                out[i] = rec["kl"]
            else:
                todo.setdefault(g.request.case.key, []).append(i)
        start = time.perf_counter()
        for case_key, rows in todo.items():
            for chunk in (rows[j:j + _DOSE_ROWS] for j in range(0, len(rows), _DOSE_ROWS)):
                kl = doses(engine, [gens[i].request for i in chunk], gens[base[case_key]].text)
                for i, v in zip(chunk, kl, strict=True):
                    out[i] = v
                    if self.cache and not math.isnan(v):
                        self.cache.put("dose", {"format": DOSE_FORMAT, "steered": hashes[i],
                                                "baseline": hashes[base[case_key]]}, {"kl": v})
        self.dose_seconds += time.perf_counter() - start
        self.dose_rows += sum(len(r) for r in todo.values())
        return out

    def _off_target_doses(self, spec: RunSpec, gens: Sequence[Generation]) -> list[float]:
        """Each row's off-target dose (`dose.OFF_TARGET_DOSE`; 0 for the baseline): per (case, config), the same in
        every trial, from the cache where it has it."""
        from ..dose import doses, neutral_text

        out = [0.0 if g.request.config.is_baseline else math.nan for g in gens]
        todo: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, g in enumerate(gens):
            if g.request.config.is_baseline:
                continue
            first = dataclasses.replace(g.request, trial=0)  # no sampling: every trial's value is trial 0's
            key = {"format": OFF_TARGET_FORMAT, "row": key_hash(self._generation_key(spec, first, {})),
                   "text": neutral_text(g.request.case.key)}
            rec = self.cache.get("off-target-dose", key) if self.cache else None
            if rec is not None and isinstance(rec.get("kl"), float):
                out[i] = rec["kl"]
            else:
                todo.setdefault(g.request.case.key, []).append((i, key))
        start, engine = time.perf_counter(), self.engine(spec) if todo else None
        for case_key, rows in todo.items():
            for chunk in (rows[j:j + _DOSE_ROWS] for j in range(0, len(rows), _DOSE_ROWS)):
                assert engine is not None
                kl = doses(engine, [dataclasses.replace(gens[i].request, trial=0) for i, _ in chunk],
                           neutral_text(case_key))
                for (i, key), v in zip(chunk, kl, strict=True):
                    out[i] = v
                    if self.cache and not math.isnan(v):
                        self.cache.put("off-target-dose", key, {"kl": v})
        self.dose_seconds += time.perf_counter() - start
        self.off_target_rows += sum(len(r) for r in todo.values())
        return out

    def _samples(self, gens: Sequence[Generation]) -> list[Sample]:
        base = {g.request.case.key: g.n_tokens for g in gens if g.request.config.is_baseline}
        return [Sample(g.request.case, g.request.config, g.request.case.prompt, g.text, g.n_tokens, g.finish_reason,
                       None if g.request.config.is_baseline else base.get(g.request.case.key)) for g in gens]

    def _scored(self, scorer: Scorer, samples: Sequence[Sample], gen_hashes: Sequence[str]) -> list[Score]:
        """One scorer's scores, from the cache where it has them: a new scorer re-scores without regenerating."""
        keys = [score_key(scorer=scorer.name, scorer_identity=scorer.identity(), generation_key_hash=h, options={},
                          extra={"baseline_n_tokens": s.baseline_n_tokens})
                for s, h in zip(samples, gen_hashes, strict=True)]
        out: list[Score | None] = []
        for k in keys:
            rec = self.cache.get("score", k) if self.cache else None
            ok = rec is not None and isinstance(rec.get("values"), dict) and isinstance(rec.get("details"), dict)
            out.append(Score(rec["values"], rec["details"]) if ok and rec is not None else None)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            try:
                fresh: list[Score | None] = list(self._score_batch(scorer, [samples[i] for i in todo]))
            except Exception:  # find the rows it fails on: they lose this scorer's scores, the others keep theirs
                fresh = [self._score_one(scorer, samples[i], gen_hashes[i]) for i in todo]
            for i, sc in zip(todo, fresh, strict=True):
                out[i] = sc
                if self.cache and sc is not None:
                    self.cache.put("score", keys[i], {"values": sc.values, "details": sc.details})
        missing = Score(dict.fromkeys((m.name for m in scorer.metrics), None))
        return [s if s is not None else missing for s in out]

    @staticmethod
    def _score_batch(scorer: Scorer, samples: Sequence[Sample]) -> list[Score]:
        fresh = scorer.score(samples)
        if len(fresh) != len(samples):
            raise RuntimeError(f"scorer {scorer.name!r} returned {len(fresh)} scores for {len(samples)} samples")
        return fresh

    def _score_one(self, scorer: Scorer, sample: Sample, gen_hash: str) -> Score | None:
        """One sample's scores, or None (recorded, not cached: a fixed scorer retries it) when the scorer fails."""
        try:
            return self._score_batch(scorer, [sample])[0]
        except Exception as exc:  # a user's scorer may raise anything; the row keeps its other scores
            why = f"{type(exc).__name__}: {exc}"
            self._failures[(gen_hash, scorer.name)] = why
            self.scorer_failures.append(f"scorer {scorer.name!r} failed on case {sample.case.key!r} "
                                        f"({sample.config.label}): {why}")
            log.warning("pytest-steer: %s", self.scorer_failures[-1])
            return None

    def _score(self, spec: RunSpec, gens: list[Generation], gen_hashes: list[str],
               dose: Sequence[float], off_target: Sequence[float] = ()) -> list[ResultRow]:
        samples = self._samples(gens)
        names = [m.name for m in self.metrics(spec)]
        scorers = self.scorers(spec)
        per_scorer = [self._scored(s, samples, gen_hashes) for s in scorers]
        rows = []
        for i, g in enumerate(gens):
            values: dict[str, float | None] = {}
            details: dict[str, Any] = {}
            for scores in per_scorer:
                values.update(scores[i].values)
                details.update(scores[i].details)
            failed = {s.name: self._failures[(gen_hashes[i], s.name)] for s in scorers
                      if (gen_hashes[i], s.name) in self._failures}
            if failed:
                details["scorer_errors"] = failed
            values[DOSE.name] = None if math.isnan(dose[i]) else dose[i]
            if off_target:
                values[OFF_TARGET_DOSE.name] = None if math.isnan(off_target[i]) else off_target[i]
            cfg, case = g.request.config, g.request.case
            rows.append(ResultRow(
                key=case.key, tags=list(case.tags), method=cfg.method, value=cfg.value,
                config=cfg.label, strength=cfg.strength, trial=g.request.trial, seed=g.seed, prompt=case.prompt,
                response=g.text, n_tokens=g.n_tokens, finish_reason=g.finish_reason,
                scores={n: values.get(n) for n in names}, details=dict(sorted(details.items())),  # as cached
                task=spec.task, run=spec.key(),
            ))
        return rows

    def result(self, spec: RunSpec, config: str | GridPoint, trial: int | None) -> EvalResult:
        """The scored rows of one config, for one trial or pooled over all trials, with its paired baseline."""
        label = config if isinstance(config, str) else config.label
        if (spec, label, trial) not in self._results:
            self._results[(spec, label, trial)] = self._result(spec, label, trial)
        return self._results[(spec, label, trial)]

    def _result(self, spec: RunSpec, label: str, trial: int | None) -> EvalResult:
        if label != BASELINE:
            spec.config(label)  # KeyError naming the grid's labels
        trials = range(spec.trials) if trial is None else [trial]
        rows = [r for t in trials for r in self.rows(spec, t)]
        metrics, primary = self.metrics(spec), self.task(spec).primary
        mine = [r for r in rows if r.config == label]
        if label == BASELINE:
            return EvalResult(BASELINE, trial, mine, metrics, primary=primary)
        return EvalResult(label, trial, mine, metrics, primary=primary, baseline=self.result(spec, BASELINE, trial))

    def comparable_settings(self, spec: RunSpec) -> dict[str, Any]:
        """What a stored baseline must share with this run to be comparable, and what the report needs to know
        of the run (its task's primary metric: an xdist controller may not have imported a user's task)."""
        import json

        s = spec.flat()
        s.pop("include_baseline", None)
        settings = self.settings(spec)
        s.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
        s["model_identity"] = self.model.identity
        s["cases"] = [c.content_hash() for c in self.cases(spec)]
        s["primary"] = self.task(spec).primary
        out: dict[str, Any] = json.loads(json.dumps(s, default=str))
        return out

    def all_rows(self) -> list[ResultRow]:
        """Every row this process produced, in generation order."""
        return [r for rows in self._units.values() for r in rows]

    def method_notes(self) -> list[str]:
        """What the prepared methods say about themselves (actadd's layer(s) and fallbacks), once each."""
        notes = [line for built in self._methods.values() for m in built.values()
                 for line in (m.notes() if callable(getattr(m, "notes", None)) else [])]  # type: ignore[attr-defined]
        return list(dict.fromkeys(notes))

    def meta(self) -> dict[str, str]:
        """What can move the numbers, for the report."""
        import torch
        import transformers

        m = self._model
        total = self.generated_rows + self.cached_rows
        out = {
            "model": self.model_settings.model,
            "model identity": m.identity if m else "",
            "device": str(m.device) if m else self.model_settings.device,
            "dtype": str(m.dtype).removeprefix("torch.") if m else self.model_settings.dtype,
            "attention": self.model_settings.attn,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cache hit rate": f"{self.cached_rows / total:.0%} of {total} rows" if total else "n/a",
        }
        from ..metrics.scorers import RewardScore

        reward_models = {s.model_identity for scorers in self._scorers.values() for s in scorers
                         if isinstance(s, RewardScore)}
        if reward_models:
            out["reward model identity"] = ", ".join(sorted(reward_models))
        notes = self.method_notes()
        if notes:
            out["method notes"] = "; ".join(notes)
        if self._batch_sizes:
            out["batch size"] = ", ".join(sorted({str(b) for b in self._batch_sizes.values()}))
        if self.generation_seconds > 0:
            out["generation"] = f"{self.generated_tokens} tokens in {self.generation_seconds:.1f} s " \
                                f"({self.generated_tokens / self.generation_seconds:.1f} tokens/s)"
        if self.dose_rows or self.off_target_rows:
            out["dose pass"] = f"{self.dose_rows} steered rows and {self.off_target_rows} off-target passages " \
                               f"in {self.dose_seconds:.1f} s " \
                               f"({self.dose_seconds / max(self.generation_seconds, 1e-9):.0%} of generation time)"
        out.update(self.backend.meta())
        if self.cache is not None:
            st = self.cache.stats
            out["cache problems"] = f"{st.corrupt} corrupt record(s) regenerated, {st.unwritable} not written"
        return out


def _layer_sweep_tools(model: LoadedModel, task: Task, max_new_tokens: int = 0) -> dict[str, Any]:
    """What the held-out sweeps (activation steering's `auto` layers, PASTA's head profiling) score responses
    with: the task's judge (IFEval: its strict check); each response's perplexity alone under the unsteered
    model (`auto`'s degeneration filter); its log-likelihood given the prompt (profiling's tie-break); and the
    run's token budget. A task without a judge gives none, and the sweep says what it needs."""
    import functools

    from ..methods.actadd import response_perplexities
    from ..metrics.scorers import Fluency

    if task.judge is None:
        return {}
    return {"follows": task.judge, "perplexities": functools.partial(response_perplexities, model.model,
                                                                     model.tokenizer),
            "log_likelihoods": Fluency(model.model, model.tokenizer).log_likelihoods,
            "scorer": task.judge_name or task.name, "max_new_tokens": max_new_tokens}


def default_cache(enabled: bool = True, directory: str | Path | None = None) -> ResultCache:
    return ResultCache(Path(directory) if directory else default_cache_dir(), enabled=enabled)
