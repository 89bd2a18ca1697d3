"""Hugging Face sequence classifiers as reward models, on tiny ones built and saved here: what
they score, and which of their outputs a scorer config names."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from orchestrator.config.sections import RewardModelScorer
from orchestrator.data.encoding import prompt_text
from orchestrator.errors import MoaError
from orchestrator.model.reward_model import LAYOUT
from orchestrator.rewards.reward_models import Classifier, classifier_head


@pytest.fixture(scope="module")
def reward_model_dir(tiny_base_dir, tmp_path_factory):
    """factory(seed, num_labels=1): a tiny Llama reward model with the tiny base's tokenizer,
    saved like a hub model and loaded back through from_pretrained."""

    def build(seed: int, num_labels: int = 1, labels=None):
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
            **({"id2label": dict(enumerate(labels))} if labels else {}),
        )
        out = tmp_path_factory.mktemp(f"reward-{seed}-{num_labels}")
        LlamaForSequenceClassification(config).save_pretrained(out)
        tokenizer.save_pretrained(out)
        return str(out)

    return build


PROMPTS = ["How do I sharpen a knife?", "How can I start a campfire?", "How do I swim?"]
RESPONSES = ["Use a whetstone.", "Gather dry wood, then light the kindling carefully.", "Practise."]


def test_scores_are_the_last_token_logits_in_a_padded_batch_or_alone(reward_model_dir):
    path = reward_model_dir(1, num_labels=2)
    scores = Classifier(path, batch_size=3)(PROMPTS, RESPONSES)
    assert scores.shape == (3, 2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = LlamaForSequenceClassification.from_pretrained(path).eval()
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        text = prompt_text(tokenizer, prompt) + response  # as training encodes a row, and EOS
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits[0]  # no padding at all
        assert scores[row] == pytest.approx(alone.tolist(), abs=1e-5)
    assert abs(scores[:, 0] - scores[:, 1]).max() > 1e-4  # two different outputs


def test_a_head_is_named_by_index_or_label_and_needed_when_there_are_several(reward_model_dir):
    one = reward_model_dir(2)
    two = reward_model_dir(3, num_labels=2, labels=["helpful", "harmless"])
    assert classifier_head(RewardModelScorer(model=one), "f") == (one, 0)
    assert classifier_head(RewardModelScorer(model=two, head=1), "f") == (two, 1)
    assert classifier_head(RewardModelScorer(model=two, head="harmless"), "f") == (two, 1)
    cases = [
        ({"model": two}, r"f\.head: .* has 2 outputs \['helpful', 'harmless'\]; name one"),
        ({"model": two, "head": 2}, r"f\.head: 2 is out of range; .* has 2 outputs"),
        ({"model": two, "head": "concise"}, r"f\.head: .* has no output 'concise'"),
        ({"model": one + "-missing"}, r"f\.model: could not load"),
    ]
    for spec, message in cases:
        with pytest.raises(MoaError, match=message):
            classifier_head(RewardModelScorer(**spec), "f")


def test_a_folder_of_one_reward_model_per_objective_resolves_to_the_heads_subfolder(
    reward_model_dir, tmp_path
):
    folder = tmp_path / "reward_model"
    for seed, name in enumerate(["helpful", "harmless"]):
        source = reward_model_dir(10 + seed)
        (folder / name).mkdir(parents=True)
        for file in Path(source).iterdir():
            (folder / name / file.name).write_bytes(file.read_bytes())
    layout = {"objectives": ["helpful", "harmless"], "per_objective": True}
    (folder / LAYOUT).write_text(json.dumps(layout))
    spec = RewardModelScorer(model=str(folder), head="harmless")
    assert classifier_head(spec, "f") == (str(folder / "harmless"), 0)
    with pytest.raises(MoaError, match=r"f\.head: .* one reward model per objective"):
        classifier_head(RewardModelScorer(model=str(folder)), "f")
