"""Packed pair batches (data/packing.py) give the response log-probs, losses and gradients of the
padded batches they replace (collate_pairs, the reference): 2 and 3 objectives, a λ per pair,
the frozen anchor, eager attention, several rows, another architecture, the output head run a
chunk of tokens at a time, and a model whose logits are not its head's outputs."""

from dataclasses import replace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from orchestrator.algorithms.panacea import (
    objective_losses,
    policy_logprobs,
    reference_logprobs,
)
from orchestrator.config.sections import TrainSection
from orchestrator.data.encoding import EncodedPair, collate_pairs
from orchestrator.data.packing import pack_pairs, packed_length
from orchestrator.model import forward
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import (
    adapter_parameters,
    freeze_anchor,
    inject_svd_lora,
    preference,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def steerable(tiny_base_dir, perturb):
    def make(objectives: int = 2, base=None):
        model = inject_svd_lora(base or load_model(str(tiny_base_dir)), objectives, 4, 32.0)
        perturb(model, std=0.05)
        return model.eval()

    return make


def both(pairs, pad_id, **packing):
    return collate_pairs(pairs, pad_id), pack_pairs(pairs, pad_id, **packing)


@pytest.mark.parametrize("row_tokens", [1024, 200])
def test_packed_log_probs_equal_padded_at_a_lambda(steerable, tokenizer, encoded, row_tokens):
    model = steerable()
    padded, packed = both(encoded[:8], tokenizer.pad_token_id, row_tokens=row_tokens)
    assert (packed["input_ids"].shape[0] == 1) == (row_tokens == 1024)  # one row, or several
    with torch.no_grad(), preference(model, [0.3, 0.7]):
        want, got = policy_logprobs(model, padded), policy_logprobs(model, packed)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)
    real = sum(packed_length(p) for p in encoded[:8])
    assert packed["input_ids"].numel() - real < padded["input_ids"].numel() - real


def test_packing_shares_the_prompt_and_pads_only_row_ends(tokenizer, encoded):
    pairs = encoded[:3]
    packed = pack_pairs(pairs, tokenizer.pad_token_id)
    p, a, b = (len(pairs[0].prompt), len(pairs[0].response_a), len(pairs[0].response_b))
    row = packed["input_ids"][0]
    assert row[: p + a + b].tolist() == pairs[0].prompt + pairs[0].response_a + pairs[0].response_b
    assert packed["position_ids"][0, p + a : p + a + b].tolist() == list(range(p, p + b))
    mask = packed["attention_mask"][0, 0]
    assert mask[p + a, :p].all() and not mask[p + a, p : p + a].any()  # b sees the prompt, not a
    assert not mask[p + a + b :, : p + a + b].any()  # the next pair sees nothing of the first
    assert packed["input_ids"].shape == (1, sum(packed_length(x) for x in pairs))


@pytest.mark.parametrize("loss", ["dpo", "sft"])
def test_three_objectives_a_lambda_per_pair_and_margins_give_the_padded_losses_and_gradients(
    steerable, tokenizer, encoded, loss
):
    model = steerable(3)
    signs = [[1, -1, 0], [-1, 1, 1], [0, 0, 1], [1, 1, -1], [-1, 0, 1], [1, -1, -1]]
    pairs = [replace(pair, signs=s) for pair, s in zip(encoded, signs, strict=False)]
    padded, packed = both(pairs, tokenizer.pad_token_id, row_tokens=300)
    own = torch.softmax(torch.randn(len(pairs), 3, generator=torch.Generator().manual_seed(0)), -1)
    margins = torch.randn(len(pairs), 3, generator=torch.Generator().manual_seed(1))
    cfg = TrainSection(loss=loss, nll_weight=0.1)
    grads = []
    for batch in (padded, packed):
        batch.update(preferences=own, margins=margins)
        losses = objective_losses(model, batch, None, cfg)
        model.zero_grad()
        losses.sum().backward()
        grads.append([p.grad.clone() for p in adapter_parameters(model).values()])
        batch["losses"] = losses.detach()
    torch.testing.assert_close(packed["losses"], padded["losses"], atol=1e-5, rtol=1e-6)
    for g_packed, g_padded in zip(*grads[::-1], strict=True):
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4)


def test_the_frozen_anchor_and_pi_ref_give_the_padded_reference(steerable, tokenizer, encoded):
    model = steerable()
    freeze_anchor(model)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.add_(0.05)  # the policy moves away from its anchor
    padded, packed = both(encoded[:6], tokenizer.pad_token_id)
    own = torch.tensor([[0.1, 0.9], [0.5, 0.5], [1.0, 0.0], [0.3, 0.7], [0.8, 0.2], [0.6, 0.4]])
    for batch in (padded, packed):
        batch["preferences"] = own
    for kwargs in ({"initial": True}, {}):
        torch.testing.assert_close(
            reference_logprobs(model, packed, **kwargs),
            reference_logprobs(model, padded, **kwargs),
            atol=1e-5,
            rtol=1e-6,
        )


def test_eager_attention_and_grouped_kv_heads_give_the_padded_log_probs(
    steerable, tokenizer, encoded
):
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    for base in (None, Qwen2ForCausalLM(config)):
        model = steerable(2, base)
        padded, packed = both(encoded[:5], tokenizer.pad_token_id, row_tokens=250)
        for attention in ("sdpa", "eager"):
            model.set_attn_implementation(attention)
            with torch.no_grad(), preference(model, [0.6, 0.4]):
                want, got = policy_logprobs(model, padded), policy_logprobs(model, packed)
            for w, g in zip(want, got, strict=True):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)


def test_a_pair_longer_than_a_row_gets_a_row_of_its_own(tokenizer):
    long = EncodedPair(list(range(3, 40)), list(range(5, 60)), list(range(7, 50)), [1])
    short = EncodedPair([3, 4], [5], [6], [-1])
    packed = pack_pairs([short, long, short], tokenizer.pad_token_id, row_tokens=100)
    assert packed["input_ids"].shape == (2, packed_length(long))
    assert packed["token_pairs"][0, :8].tolist() == [0, 0, 0, 0, 2, 2, 2, 2]


class HeadCalls:
    """Records how many tokens each call of the output head gets."""

    def __init__(self, model):
        self.tokens = []
        model.get_output_embeddings().register_forward_hook(self.record)

    def record(self, module, inputs, output):
        self.tokens.append(inputs[0].shape[:-1].numel())


def test_the_head_runs_on_chunks_of_response_tokens_with_the_padded_gradients(
    steerable, tokenizer, encoded, monkeypatch
):
    model = steerable()
    vocabulary = model.get_output_embeddings().weight.shape[0]
    padded, packed = both(encoded[:4], tokenizer.pad_token_id)
    responses = len(packed["targets"])
    results = []
    for chunk in (None, 7):  # one chunk of every response token, then 7 tokens a chunk
        if chunk:
            monkeypatch.setattr(forward, "LOGIT_CHUNK_ELEMENTS", chunk * vocabulary)
        for batch in (padded, packed):
            calls = HeadCalls(model) if batch is packed else None
            with preference(model, [0.3, 0.7]):
                logps = torch.cat(policy_logprobs(model, batch)[:2])
            model.zero_grad()
            logps.sum().backward()
            grads = [p.grad.clone() for p in adapter_parameters(model).values()]
            results.append((logps.detach(), grads))
            if calls:
                model.get_output_embeddings()._forward_hooks.clear()
                if chunk is None:  # the first use checks the head on 4 tokens, twice
                    assert calls.tokens[:2] == [4, 4]
                    assert calls.tokens[2:] == [responses]
                else:  # each chunk in the forward pass, then again in the backward pass
                    want = [chunk] * (responses // chunk) + [responses % chunk][: responses % chunk]
                    assert calls.tokens[: len(want)] == want
                    assert sorted(calls.tokens[len(want) :]) == sorted(want)
    for logps, grads in results[1:]:
        torch.testing.assert_close(logps, results[0][0], atol=1e-5, rtol=1e-6)
        for got, want in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_logits_the_model_post_processes_come_from_its_whole_forward(steerable, tokenizer, encoded):
    model = steerable()
    head_forward = model.lm_head.forward
    model.lm_head.forward = lambda hidden: 2.0 * head_forward(hidden)  # seen as it is
    scaled = model.forward

    def softcapped(*args, **kwargs):  # as Gemma 2 caps its logits after the head
        out = scaled(*args, **kwargs)
        out.logits = 30.0 * torch.tanh(out.logits / 30.0)
        return out

    model.forward = softcapped
    padded, packed = both(encoded[:4], tokenizer.pad_token_id)
    with torch.no_grad(), preference(model, [0.5, 0.5]):
        want, got = policy_logprobs(model, padded), policy_logprobs(model, packed)
        with forward.hidden_states_as_logits(model) as head:
            assert head is None
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-6)
