"""Chat-template rendering and batch encoding shared by generation, steering and scoring.

One place, so that the prompt the model generates from, the prompt a steering method marks up and
the prompt fluency is measured against are byte-for-byte the same string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def render_chat(tokenizer: Any, prompt: str | Sequence[dict[str, str]]) -> str:
    """`prompt` (a user message, or chat messages) in the tokenizer's chat template, ready for generation.

    The rendered string contains the template's special tokens as text; tokenize it with
    `add_special_tokens=False` so they are not added twice.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    # Base models without a template: the turns' text plus a newline is the least surprising choice.
    return "\n".join(m["content"] for m in messages) + "\n"


def default_system_text(tokenizer: Any) -> str | None:
    """The system text the chat template inserts when a conversation has none (SmolLM2 and Qwen2.5 do), or None.

    Found by rendering a user turn alone and with a sentinel system message: where the template
    puts the sentinel, the lone rendering has the default text.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    sentinel, user = "\x00system\x00", [{"role": "user", "content": "\x00user\x00"}]
    alone = render_chat(tokenizer, user)
    marked = render_chat(tokenizer, [{"role": "system", "content": sentinel}, *user])
    if sentinel not in marked:
        return None
    before, after = marked.split(sentinel, 1)
    if not (alone.startswith(before) and alone.endswith(after)) or len(alone) <= len(before) + len(after):
        return None
    return alone[len(before): len(alone) - len(after)] or None


@dataclass
class EncodedBatch:
    """Rendered prompts, left padded, with each token's character span in its rendered text."""

    texts: list[str]
    input_ids: Any  # torch.LongTensor [batch, prompt_len]
    attention_mask: Any  # torch.LongTensor [batch, prompt_len]
    offsets: Any  # torch.LongTensor [batch, prompt_len, 2]; (0, 0) for padding and added tokens

    def char_mask(self, row: int, start: int, end: int) -> Any:
        """Bool [prompt_len]: the real tokens of `row` that overlap characters [start, end) of its text."""
        off = self.offsets[row]
        return (off[:, 0] < end) & (off[:, 1] > start) & self.attention_mask[row].bool()


def encode(tokenizer: Any, texts: Sequence[str], device: Any = None) -> EncodedBatch:
    """Tokenize rendered prompts as one left-padded batch, keeping character offsets."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False,
                        return_offsets_mapping=True)
    finally:
        tokenizer.padding_side = side
    offsets = enc.pop("offset_mapping")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, mask, offsets = ids.to(device), mask.to(device), offsets.to(device)
    return EncodedBatch(list(texts), ids, mask, offsets)
