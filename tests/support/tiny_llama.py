"""A tiny random-weight Llama (CPU, fast) and a stand-in tokenizer, for the KV press tests."""

from __future__ import annotations

import torch

CUDA = torch.cuda.is_available()


def tiny_model(impl: str = "sdpa", device: str = "cpu"):  # noqa: ANN201
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    cfg._attn_implementation = impl
    return LlamaForCausalLM(cfg).eval().to(device)


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` token ids from a seeded generator: the same on every run (the global RNG depends on test order)."""
    return torch.randint(0, 128, (1, n), generator=torch.Generator().manual_seed(seed))


class ByteTok:
    """A character-level stand-in tokenizer for the tiny model."""

    eos_token_id = None

    def __call__(self, text: str, return_tensors: str = "pt", add_special_tokens: bool = True):  # noqa: ANN204
        return type("Enc", (), {"input_ids": torch.tensor([[ord(c) % 128 for c in text]])})()

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(65 + i % 26) for i in ids)
