import pytest
import torch

from orchestrator.algorithms.soups import expert_deltas, merged, soup_delta
from orchestrator.data.encoding import collate_pairs
from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import load_adapter, merge_preference, save_adapter
from orchestrator.model.loading import load_model
from orchestrator.model.svd_lora import inject_svd_lora, preference, svd_lora_layers


@pytest.fixture(scope="module")
def experts(tiny_base_dir, perturb, tmp_path_factory, single_thread):
    """The tiny model with an adapter slot, and two random 'expert' adapters on disk."""
    model = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=32)
    folders = []
    for seed in (1, 2):
        perturb(model, seed=seed, std=0.05)
        folders.append(save_adapter(model, tmp_path_factory.mktemp(f"expert{seed}") / "adapter"))
    return model, folders


def logits(model, batch, lam=None):
    with torch.no_grad():
        if lam is None:
            return model(input_ids=batch["input_ids"]).logits
        with preference(model, lam):
            return model(input_ids=batch["input_ids"]).logits


def test_a_soup_at_a_vertex_is_that_expert(experts, encoded, tokenizer):
    model, folders = experts
    batch = collate_pairs(encoded[:3], tokenizer.pad_token_id)
    deltas = expert_deltas(model, folders)
    for i, vertex in enumerate(([1.0, 0.0], [0.0, 1.0])):
        with merged(model, soup_delta(deltas, vertex)):
            soup_logits = logits(model, batch)
        load_adapter(model, folders[i])
        expert_logits = logits(model, batch, vertex)
        assert torch.allclose(soup_logits, expert_logits, atol=1e-4)
        other = [1 - vertex[0], 1 - vertex[1]]
        assert (soup_logits - logits(model, batch, other)).abs().max() > 1e-3


def test_a_soup_between_vertices_is_the_interpolated_update(experts, encoded, tokenizer):
    model, folders = experts
    batch = collate_pairs(encoded[:3], tokenizer.pad_token_id)
    bases = {name: layer.base.weight.clone() for name, layer in svd_lora_layers(model)}
    # ΔW_i independently: the expert merged into a plain copy, minus the base weights.
    updates = []
    for i, folder in enumerate(folders):
        load_adapter(model, folder)
        plain = merge_preference(model, [float(i == 0), float(i == 1)])
        updates.append({n: plain.get_submodule(n).weight.detach() - w for n, w in bases.items()})
    with merged(model, soup_delta(expert_deltas(model, folders), [0.3, 0.7])):
        for name, layer in svd_lora_layers(model):
            expected = bases[name] + 0.3 * updates[0][name] + 0.7 * updates[1][name]
            assert torch.allclose(layer.base.weight, expected, atol=1e-6)
        soup_logits = logits(model, batch)
    plain = merge_preference(model, [1.0, 0.0])  # a plain model to put the expected weights in
    with torch.no_grad():
        for name in bases:
            expected = bases[name] + 0.3 * updates[0][name] + 0.7 * updates[1][name]
            plain.get_submodule(name).weight.copy_(expected)
    assert torch.allclose(soup_logits, logits(plain, batch), atol=1e-5)
    for name, layer in svd_lora_layers(model):  # the base weights are restored
        assert torch.equal(layer.base.weight, bases[name])


def test_a_soup_needs_one_weight_per_expert(experts):
    model, folders = experts
    with pytest.raises(MoaError, match="2 experts needs 2 weights"):
        soup_delta(expert_deltas(model, folders), [1.0])
