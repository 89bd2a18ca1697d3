"""Fixtures for the model tests: tiny random Llamas and non-zero SVD-LoRA adapters."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(autouse=True, scope="module")
def _single_thread(single_thread):
    """Every model test runs on one thread."""


def build_llama(
    seed: int = 0,
    *,
    vocab_size: int = 128,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    tie_word_embeddings: bool = False,
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=128,
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def model(tiny_base_dir, perturb):
    """The tiny base with a random non-zero SVD-LoRA adapter, so λ changes what it writes."""
    from orchestrator.model.loading import load_model
    from orchestrator.model.svd_lora import inject_svd_lora

    steerable = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=8.0)
    perturb(steerable)
    return steerable.eval()


def greedy_without_cache(model, prompt_ids, steps: int, stops=()) -> list[int]:
    """Greedy decoding the slow way: the whole sequence again at every step, no KV cache; the
    tokens before the first stop token, at most `steps`."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token in stops:
                break
            ids.append(token)
    return ids[len(prompt_ids) :]


@pytest.fixture(scope="session")
def naive_greedy():
    """naive_greedy(model, prompt_ids, steps, stops=()): greedy_without_cache."""
    return greedy_without_cache


@pytest.fixture(scope="session")
def make_llama():
    """A factory: make_llama(seed, **sizes) → a tiny random LlamaForCausalLM in eval mode.

    The same seed and sizes give the same weights, so a call is a fresh copy of a base model.
    """
    return build_llama
