"""Chat-template rendering shared by generation, steering masks and the fluency score.

One function so that the prompt the model generates from, the prompt PASTA highlights in and the
prompt fluency is measured against are byte-for-byte the same string.
"""

from __future__ import annotations

from typing import Any


def render_chat(tokenizer: Any, prompt: str) -> str:
    """Return `prompt` as a single user turn in the tokenizer's chat template, ready for generation.

    The rendered string contains the template's special tokens as text; tokenize it with
    `add_special_tokens=False` so they are not added twice.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    # Base models without a template: the raw prompt plus a newline is the least surprising choice.
    return prompt + "\n"
