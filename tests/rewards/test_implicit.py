import numpy as np
import pytest
import torch

from orchestrator.data.encoding import encode_prompt, encode_response
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import (
    adapter_disabled,
    inject_svd_lora,
    preference,
)
from orchestrator.rewards.implicit import implicit_rewards

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tiny_base_dir, perturb):
    model = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=32, seed=0)
    perturb(model, seed=3, std=0.05, scale=2.0)
    return model.eval()


def logprob_by_hand(model, tokenizer, prompt, response):
    """log p(response | prompt), one token at a time from the full-sequence logits."""
    p = encode_prompt(tokenizer, prompt, 256)
    r = encode_response(tokenizer, response, 512)
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(logp[len(p) + j - 1, token].item() for j, token in enumerate(r))


def test_implicit_rewards_equal_beta_times_the_log_ratio(model, tokenizer):
    prompts = ["How do I start a campfire?", "How can I learn to swim?", "Hi"]
    responses = ["Gather dry wood first.", "I am sorry, but I cannot help with that.", "Hello"]
    rewards = implicit_rewards(model, tokenizer, prompts, responses, beta=0.5, batch_size=2)
    assert rewards.shape == (3, 2)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        with adapter_disabled(model):
            reference = logprob_by_hand(model, tokenizer, prompt, response)
        for i, lam in enumerate(([1.0, 0.0], [0.0, 1.0])):
            with preference(model, lam):
                steered = logprob_by_hand(model, tokenizer, prompt, response)
            assert rewards[row, i] == pytest.approx(0.5 * (steered - reference), abs=1e-4)
    assert not np.allclose(rewards[:, 0], rewards[:, 1])  # the objectives judge differently
