"""A real user's first commands, end to end, against a local stand-in of the Hugging Face Hub.

`huggingface_hub`, `transformers` and `datasets` run their real download code against `tests/hub_stand_in.py`
(HF_ENDPOINT on 127.0.0.1), in a pytest subprocess as a user would: a tiny Qwen2 chat model, a tiny DeBERTa-v2
reward model and a Split-IFEval-shaped parquet dataset, two commits each. The commands are the docs'
"Using a Hub model" section (docs/hub.md), with the real ids mapped to the stand-in's and a small grid appended.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub_stand_in import HubStandIn, folder_files

HUB_PAGE = Path(__file__).resolve().parents[1] / "docs" / "hub.md"
#: the page's real ids -> the stand-in's repos
IDS = {"Qwen/Qwen2.5-1.5B-Instruct": "org/tiny-qwen2", "OpenAssistant/reward-model-deberta-v3-large-v2": "org/tiny-rm",
       "ibm-research/Split-IFEval": "org/split-ifeval"}
#: appended to every command of the page: one PASTA strength, one trial, one case per seed type, 4 new tokens, and
#: no pytest-html page (steer-report/summary.html is still written)
SMALL_GRID = ["--steer-methods", "pasta", "--steer-alphas", "10", "--steer-trials", "1", "--steer-per-type", "1",
              "--steer-max-new-tokens", "4", "--steer-html", "false", "-p", "no:cacheprovider"]
EVAL = """
def test_answers(steer_result):
    assert steer_result.quality == steer_result.reward
"""


def hub_page_commands() -> list[str]:
    """The shell commands of the page "Using a Hub model" (docs/hub.md), continuation lines joined."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", HUB_PAGE.read_text("utf-8"), flags=re.S)
    joined = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    return [" ".join(line.split("#")[0].split()) for line in joined if line.strip() and not line.startswith("#")]


# -- the repos --------------------------------------------------------------------------------------


def _qwen2(out: Path, tokenizer: Any, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)  # SmolLM2's tokenizer, chat template included
    return out


def deberta_v2_tokenizer(texts: list[str]) -> Any:
    """DeBERTa-v2's own tokenizer class over a SentencePiece-style Unigram vocabulary trained offline on `texts`
    (the hub's DeBERTa-v3 models ship a 128k-piece one; the class and the algorithm are the same)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import DebertaV2Tokenizer

    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.NFC()
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    unigram.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=specials,
                                                               unk_token="[UNK]"))
    vocab = [(piece, score) for piece, score in json.loads(unigram.to_str())["model"]["vocab"]]
    return DebertaV2Tokenizer(vocab=vocab)


def _reward_model(out: Path, tokenizer: Any, seed: int) -> Path:
    """A 2-layer DeBERTa-v2 sequence classifier with one output (a reward model's head), v3's attention settings."""
    import torch
    from transformers import AutoModelForSequenceClassification, DebertaV2Config

    cfg = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=512, relative_attention=True,
                          position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                          pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
                          type_vocab_size=0, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _split_ifeval(rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """A dataset repo laid out as ibm-research/Split-IFEval: a card and one parquet shard of the train split."""
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)  # kwargs become structs padded with None, as on the hub
    return {"README.md": b"---\nlicense: apache-2.0\n---\n# Split-IFEval (test stand-in)\n",
            "data/train-00000-of-00001.parquet": buf.getvalue()}


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[dict[str, bytes]]]:
    """Two commits of each repo, built once per session (about 2 s)."""
    from importlib import resources

    from transformers import AutoTokenizer

    from pytest_steer.models import embedded_model_dir

    root = tmp_path_factory.mktemp("hub-repos")
    chat_tok = AutoTokenizer.from_pretrained(embedded_model_dir()[0])
    rows = [json.loads(line) for line in
            resources.files("pytest_steer").joinpath("data", "cases.jsonl").read_text("utf-8").splitlines()]
    rm_tok = deberta_v2_tokenizer([r["prompt"] for r in rows])
    moved = [{**r, "prompt": r["prompt"] + " "} if i == 0 else r for i, r in enumerate(rows)]
    return {
        ("model", "org/tiny-qwen2"): [folder_files(_qwen2(root / f"qwen{s}", chat_tok, s)) for s in (0, 1)],
        ("model", "org/tiny-rm"): [folder_files(_reward_model(root / f"rm{s}", rm_tok, s)) for s in (0, 1)],
        ("dataset", "org/split-ifeval"): [_split_ifeval(rows), _split_ifeval(moved)],
        ("model", "org/gated-model"): [{"config.json": b"{}"}],
    }


def use_hub(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path, *, offline: bool = False) -> None:
    """What HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE do to a fresh process, done to this one (its HF libraries are
    imported already and read them at import); the environment is set too, for what reads it later."""
    import datasets.config as dc
    import huggingface_hub.constants as hc

    from pytest_steer import models

    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1" if offline else "0"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for module, values in {
        hc: {"ENDPOINT": endpoint, "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
             "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_XET_CACHE": str(home / "xet"),
             "HF_ASSETS_CACHE": str(home / "assets"), "HF_HUB_OFFLINE": offline},
        dc: {"HF_ENDPOINT": endpoint, "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
             "HF_CACHE_HOME": str(home), "HF_DATASETS_CACHE": home / "datasets", "HF_MODULES_CACHE": home / "modules",
             "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
             "EXTRACTED_DATASETS_PATH": home / "datasets" / "downloads" / "extracted",
             "HF_HUB_OFFLINE": offline, "HF_DATASETS_OFFLINE": offline},
    }.items():
        for name, value in values.items():
            monkeypatch.setattr(module, name, value)
    models.hub_reachable.cache_clear()  # asked once per process; each run here is a new "process"


@pytest.fixture
def hub(hub_repos: dict[tuple[str, str], list[dict[str, bytes]]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """The stand-in, running, with `main` at each repo's first commit; a fresh HF cache and results cache."""
    stand_in = HubStandIn()
    for (kind, repo_id), commits in hub_repos.items():
        repo = stand_in.repo(repo_id, kind, gated=repo_id == "org/gated-model")
        for files in commits:
            repo.add_commit(files)
    for var in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
                "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTEST_STEER_CACHE", str(tmp_path / "steer-cache"))
    with stand_in:
        use_hub(monkeypatch, stand_in.endpoint, tmp_path / "hf-home")
        yield stand_in
    from pytest_steer import models

    models.hub_reachable.cache_clear()  # the answer was about the stand-in: not for later tests


class Runs:
    """Runs the hub page's commands with pytester in this process (its imports are paid once), mapped onto the
    stand-in, and remembers which ran."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, hub: HubStandIn,
                 home: Path) -> None:
        self.pytester, self.monkeypatch, self.hub, self.home = pytester, monkeypatch, hub, home
        self.endpoint = hub.endpoint
        self.ran: list[str] = []
        pytester.makepyfile(**{"evals/test_hub_eval": EVAL})

    def run(self, command: str, *extra: str) -> pytest.RunResult:
        """Run one command of the page (its `VAR=value` prefixes as environment) plus the small grid."""
        self.ran.append(command)
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        words = [w for w in words if not ("=" in w and not w.startswith("-"))]
        assert words[0] == "pytest", command
        use_hub(self.monkeypatch, self.endpoint, self.home, offline=env.pop("HF_HUB_OFFLINE", "0") == "1")
        assert not env, f"no stand-in for {env} of {command}"
        args = [IDS.get(w.split("@")[0], w.split("@")[0]) + ("@" + w.split("@")[1] if "@" in w else "")
                for w in words[1:]]
        return self.pytester.runpytest(*args, *SMALL_GRID, *extra)


def _results(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    text = (pytester.path / "steer-report" / "results.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _meta(pytester: pytest.Pytester) -> str:
    return (pytester.path / "steer-report" / "summary.html").read_text("utf-8")


def test_first_commands_end_to_end(hub: HubStandIn, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    online, offline = hub_page_commands()
    runs = Runs(pytester, monkeypatch, hub, tmp_path / "hf-home")
    qwen, rm = hub.repos[("model", "org/tiny-qwen2")], hub.repos[("model", "org/tiny-rm")]

    # 1. online: downloaded, generated and scored; the report names the resolved commits
    result = runs.run(online)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*generated 8/8 rows*", "*2 passed*"])
    first = _results(pytester)
    # the reward model's score is the headline, and the side effects are still scored (issue 18, item 6)
    assert len(first) == 8 and all(r["scores"]["quality"] == r["scores"]["reward"] is not None for r in first)
    assert all(r["scores"][s] is not None for r in first for s in ("fluency", "diversity", "repetition", "truncated"))
    result.stdout.fnmatch_lines(["config * quality (reward) * side effects*"])
    page = _meta(pytester)
    assert f"hub:org/tiny-qwen2@{qwen.commits[0][0]}" in page and f"hub:org/tiny-rm@{rm.commits[0][0]}" in page
    served = len(hub.requests)

    # 2. the page's offline command with the stand-in stopped: the HF cache and our results cache, no new rows
    hub.stop()
    result = runs.run(offline)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*2 passed*"])
    result.stdout.no_fnmatch_line("*generated*rows*")
    assert [r["response"] for r in _results(pytester)] == [r["response"] for r in first]
    assert "100% of 8 rows" in _meta(pytester)

    # 3. the hub down without HF_HUB_OFFLINE: found once, said in one line, the local cache used, no retries
    result = runs.run(online)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"pytest-steer: the Hugging Face hub at {runs.endpoint} is not reachable: "
                                 "using the local HF cache only (HF_HUB_OFFLINE=1 for this run)", "*2 passed*"])
    result.stdout.no_fnmatch_line("*generated*rows*")
    assert "100% of 8 rows" in _meta(pytester)

    # 4. main moves to new weights: nothing cached from the old ones is reused
    hub.start()
    assert hub.endpoint == runs.endpoint
    new, rm_new = hub.move("org/tiny-qwen2", 1), hub.move("org/tiny-rm", 1)
    result = runs.run(online)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*generated 8/8 rows*"])
    page = _meta(pytester)
    assert f"hub:org/tiny-qwen2@{new}" in page and f"hub:org/tiny-rm@{rm_new}" in page
    assert len(hub.requests) > served

    # a long-lived process (a notebook) does not keep scoring with the reward model's old weights either
    from pytest_steer.metrics.scorers import RewardScore

    pair = (["Write a haiku about rain."], ["Rain taps the window."])
    moved = RewardScore("org/tiny-rm").rewards(*pair)
    hub.move("org/tiny-rm", 0)
    assert RewardScore("org/tiny-rm").rewards(*pair) != moved

    assert set(runs.ran) == set(hub_page_commands())  # every command of the page ran


@pytest.mark.parametrize("args, line", [
    (["--steer-model", "org/no-such-model"],
     "ERROR: pytest-steer: --steer-model org/no-such-model: no such repo on the hub (*); check the id, or log in*"),
    (["--steer-model", "org/tiny-qwen2@v9"],
     "ERROR: pytest-steer: --steer-model org/tiny-qwen2@v9: the hub repo has no revision 'v9'; give a branch, tag*"),
    (["--steer-model", "org/gated-model"],
     "ERROR: pytest-steer: --steer-model org/gated-model: gated repo on the hub; accept its conditions*"),
    (["--steer-quality", "org/no-such-rm"],
     "ERROR: pytest-steer: --steer-quality org/no-such-rm: no such repo on the hub*"),
    (["--steer-dataset", "org/no-such-data"],
     "ERROR: pytest-steer: --steer-dataset org/no-such-data: no such dataset on the hub*"),
])
def test_hub_refusals_are_one_line_before_loading(hub: HubStandIn, pytester: pytest.Pytester, args: list[str],
                                                  line: str) -> None:
    pytester.makepyfile(test_x="def test_x(steer_result):\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not any("/resolve/" in r for r in hub.requests)  # refused before any file was downloaded


def test_a_hanging_hub_costs_one_timeout(hub: HubStandIn, pytester: pytest.Pytester) -> None:
    """A server that accepts connections and never answers: one bounded question, then one line (not cached)."""
    from pytest_steer import models

    hub.hang = True
    pytester.makepyfile(test_x="def test_x(steer_result):\n    pass\n")
    start = time.perf_counter()
    result = pytester.runpytest("--steer-model", "org/tiny-qwen2")
    waited = time.perf_counter() - start
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-steer: --steer-model org/tiny-qwen2: cannot reach the Hugging Face "
                                 f"hub to load it (the Hugging Face hub at {hub.endpoint} did not answer within 5 s "
                                 "*) and it is not in the local HF cache; *"])
    assert len(hub.requests) == 1  # one question, no retries
    assert waited < 4 * models.HUB_TIMEOUT_S  # a guard against retry loops (minutes), not a speed claim
