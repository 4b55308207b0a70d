from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# pytester's in-process runs unload modules first imported inside them; pyarrow extension types
# (registered by `datasets`) can't be registered twice, so load these once for the whole session.
import datasets  # noqa: F401
import if_verifiable  # noqa: F401
import pandas.core.arrays.arrow.extension_types  # noqa: F401  (what to_parquet registers)
import pytest

import pytest_steer.session.finish
import pytest_steer.session.run  # noqa: F401
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
