from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

# pytester's in-process runs unload modules first imported inside them; pyarrow extension types
# (registered by `datasets`) can't be registered twice, so load these once for the whole session.
import datasets  # noqa: F401
import if_verifiable  # noqa: F401
import pandas.core.arrays.arrow.extension_types  # noqa: F401  (what to_parquet registers)
import pytest

import pytest_steer.backends as backends
import pytest_steer.methods as methods
import pytest_steer.scores as scores
import pytest_steer.session.finish
import pytest_steer.session.run
import pytest_steer.tasks as tasks
import pytest_steer.tasks.ifeval.scorer  # noqa: F401  (else a pytester run reloads it: two IFEvalScorer classes)
from pytest_steer.models import LoadedModel, load_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: lines that tests ask to show at the end of the run, by section title (pytest captures a passing test's print)
SUMMARY_LINES = pytest.StashKey[dict[str, list[str]]]()


@pytest.fixture
def summary_lines(request: pytest.FixtureRequest) -> Callable[[str, list[str]], None]:
    """`summary_lines(title, lines)`: show `lines` under `title` in the terminal summary of the suite."""
    sections = request.config.stash.setdefault(SUMMARY_LINES, {})
    return lambda title, lines: sections.setdefault(title, []).extend(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for title, lines in config.stash.get(SUMMARY_LINES, {}).items():
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def registries() -> Iterator[None]:
    """What a test registers (tasks, methods, scorers, backends), itself or through an in-process pytester run,
    is gone after it: a later test sees only what was there before (test_extending.py, run after
    test_tasks.py, found test_tasks' own "shout" task in place of the worked example's). A built-in task built
    during the test stays built: building it again would cost the next test its scorer's load."""
    registries = (tasks._ORIGINS, tasks._CLASHES, tasks.BUILTIN, methods._USER, scores._EXTRA, backends._USER)
    saved = [(registry, dict(registry)) for registry in registries]
    saved_tasks, builtin_tasks = dict(tasks._TASKS), set(tasks.BUILTIN)
    yield
    built = {name: task for name, task in tasks._TASKS.items()
             if name in builtin_tasks and name not in tasks._ORIGINS and name not in saved_tasks}
    for registry, items in saved:
        registry.clear()
        registry.update(items)
    tasks._TASKS.clear()
    tasks._TASKS.update({**saved_tasks, **built})


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct (converted once into the user cache)."""
    return load_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded: LoadedModel) -> Path:
    """A 2-layer random Llama with the embedded chat tokenizer, saved like a hub model: fast end-to-end runs."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
