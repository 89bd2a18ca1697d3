"""On a CUDA device in bf16: the same steering and training code as on the CPU."""

import pytest
import torch

from orchestrator.config.sections import TrainSection
from orchestrator.data.assistant_task import AssistantTask
from orchestrator.data.encoding import encode_pairs
from orchestrator.model.generate import generate
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import adapter_parameters, inject_svd_lora, preference
from orchestrator.training.trainer import MultiObjectiveTrainer

pytestmark = pytest.mark.gpu


def test_bf16_training_and_per_row_steering_on_cuda(tiny_base_dir):
    tokenizer = load_tokenizer(str(tiny_base_dir))
    model = load_model(str(tiny_base_dir), dtype="bfloat16", device="cuda")
    inject_svd_lora(model, 2, rank=4, alpha=32)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in adapter_parameters(model).values())
    pairs = AssistantTask().preference_pairs(32, ("helpful", "harmless"))
    encoded = encode_pairs(tokenizer, pairs, 32, 48)
    cfg = TrainSection(batch_size=4, grad_accum_steps=2, max_steps=3, aggregation="tche")
    history = MultiObjectiveTrainer(model, encoded, tokenizer.pad_token_id, cfg).train(
        progress=False
    )
    assert all(torch.isfinite(torch.tensor(r.objective_losses)).all() for r in history)

    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]], device="cuda")
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad(), preference(model, rows):
        together = model(ids).logits.float()
        for i in range(2):
            with preference(model, rows[i]):
                alone = model(ids[i : i + 1]).logits.float()
            assert torch.allclose(together[i : i + 1], alone, atol=5e-2)
    answers = generate(
        model,
        tokenizer,
        ["How do I bake a loaf of bread?"] * 2,
        rows,
        SamplingParams(max_new_tokens=8),
    )
    assert len(answers) == 2
