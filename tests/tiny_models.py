"""Tiny random-weight chat models built from a config: no download, milliseconds to build."""

from __future__ import annotations

from typing import Any

import torch


def tiny_model(arch: str = "llama", *, seed: int = 0, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> Any:
    """A float32 causal LM with random weights, eval mode, SDPA attention."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    cfg = cls(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()
