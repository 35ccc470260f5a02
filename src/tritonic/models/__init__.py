"""Reference models built from tritonic's ops, trainable (``gpt.py``: GPT-2 and Llama style)."""

from tritonic.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
