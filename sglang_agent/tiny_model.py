"""A tiny Llama-style model directory for CPU server tests: config + a tokenizer trained
locally with the `tokenizers` package. No downloads; SGLang fills weights with --load-format dummy."""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_SIZE = 1024

_CORPUS = [
    "the agent calls a tool and waits for the result before the next turn",
    "ls -la /home/user/project && cat README.md | head -n 20",
    "def main(): print('hello world') return 0",
    "user: book a flight from SFO to JFK tomorrow morning, window seat please",
    "assistant: calling search_flights(origin='SFO', destination='JFK', date='2026-11-23')",
    "tool: {\"flights\": [{\"id\": 42, \"price\": 312.5, \"stops\": 0}]}",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?()[]{}<>=+-*/_'\"#@$%&|\\~`^",
]


# Renders tools (OpenAI `tools`), assistant tool calls and tool results, so agents that use tools run
# against the tiny model (its dummy weights make up the words; constrained decoding the calls' shape).
CHAT_TEMPLATE = (
    "{% if tools %}<s>tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<s>{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% elif m['content'] %}{% for p in m['content'] %}{{ p['text'] if p['text'] is defined else '' }}{% endfor %}"
    "{% endif %}"
    "{% if m['tool_calls'] is defined and m['tool_calls'] %}{{ m['tool_calls'] | tojson }}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def write_tiny_llama(path: Path, num_layers: int = 2, hidden_size: int = 256) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }))
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden_size, "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": hidden_size // 4, "vocab_size": VOCAB_SIZE, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
    }))
    return path


if __name__ == "__main__":
    import sys

    print(write_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llama")))
