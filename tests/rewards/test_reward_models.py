"""Hugging Face reward models as SIPO judges, on tiny reward models built and saved here."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from orchestrator.errors import MoaError
from orchestrator.rewards.reward_models import RewardModels, render


@pytest.fixture(scope="module")
def reward_model_dir(tiny_base_dir, tmp_path_factory):
    """factory(seed, num_labels=1): a tiny Llama reward model with the tiny base's tokenizer,
    saved like a hub model and loaded back through from_pretrained."""

    def build(seed: int, num_labels: int = 1):
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            num_labels=num_labels,
        )
        out = tmp_path_factory.mktemp(f"reward-{seed}-{num_labels}")
        LlamaForSequenceClassification(config).save_pretrained(out)
        tokenizer.save_pretrained(out)
        return str(out)

    return build


PROMPTS = ["How do I sharpen a knife?", "How can I start a campfire?", "How do I swim?"]
RESPONSES = ["Use a whetstone.", "Gather dry wood, then light the kindling carefully.", "Practise."]


def test_scores_are_each_models_last_token_logit_batch_or_alone(reward_model_dir):
    paths = {"helpful": reward_model_dir(1), "harmless": reward_model_dir(2)}
    judges = RewardModels(paths, ["helpful", "harmless"], device="cpu", batch_size=3)
    scores = judges.score(PROMPTS, RESPONSES)
    assert scores.shape == (3, 2)
    for column, name in enumerate(["helpful", "harmless"]):
        tokenizer = AutoTokenizer.from_pretrained(paths[name])
        model = LlamaForSequenceClassification.from_pretrained(paths[name]).eval()
        for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
            ids = tokenizer(render(tokenizer, prompt, response), return_tensors="pt")
            with torch.no_grad():
                alone = model(**ids).logits[0, 0].item()  # no padding at all
            assert scores[row, column] == pytest.approx(alone, abs=1e-5)
    assert abs(scores[:, 0] - scores[:, 1]).max() > 1e-4  # two different judges


def test_a_model_that_is_not_a_reward_model_is_refused(reward_model_dir, tmp_path):
    with pytest.raises(MoaError, match=r"reward_models.helpful: .* 2 labels"):
        RewardModels({"helpful": reward_model_dir(3, num_labels=2)}, ["helpful"], device="cpu")
    with pytest.raises(MoaError, match=r"reward_models\.helpful: could not load"):
        RewardModels({"helpful": str(tmp_path / "missing")}, ["helpful"], device="cpu")
    with pytest.raises(MoaError, match=r"no model for objective\(s\) \['harmless'\]"):
        RewardModels({"helpful": reward_model_dir(1)}, ["helpful", "harmless"], device="cpu")
