import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model import adapter_io
from orchestrator.model.adapter_io import (
    export_lora,
    load_adapter,
    merge_preference,
    read_adapter_config,
    save_adapter,
)
from orchestrator.model.svd_lora import (
    SVDLoRALinear,
    adapter_parameters,
    inject_svd_lora,
    preference,
    set_preference,
    svd_lora_config,
    svd_lora_layers,
)

RANK, ALPHA, M = 4, 8.0, 2
# PEFT calls a transformers API that transformers 5 deprecates; not this project's concern.
PEFT_WARNING = "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
LAMBDAS = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]]


def token_ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(0, 128, (batch, length), generator=torch.Generator().manual_seed(0))


def logits_of(model, ids, lam=None) -> torch.Tensor:
    with torch.no_grad():
        if lam is None:
            return model(input_ids=ids).logits
        with preference(model, lam):
            return model(input_ids=ids).logits


def adapter_snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in adapter_parameters(model).items()}


@pytest.fixture
def model(make_llama, perturb):
    """A steerable tiny Llama (seed 0) with a random non-zero adapter."""
    steerable = inject_svd_lora(
        make_llama(0), M, rank=RANK, alpha=ALPHA, objective_names=["help", "harm"]
    )
    perturb(steerable)
    return steerable


# --- save / load -----------------------------------------------------------------------------


def test_save_then_load_into_a_fresh_base_gives_identical_logits(model, make_llama, tmp_path):
    out = save_adapter(model, tmp_path / "adapter")
    assert out == tmp_path / "adapter"
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    fresh = make_llama(0)
    assert load_adapter(fresh, out) is fresh
    assert svd_lora_config(fresh) == svd_lora_config(model)
    ids = token_ids()
    for lam in [*LAMBDAS, [[1.0, 0.0], [0.2, 0.8]]]:
        torch.testing.assert_close(logits_of(fresh, ids, lam), logits_of(model, ids, lam))
    for name, tensor in adapter_snapshot(model).items():
        assert torch.equal(adapter_parameters(fresh)[name], tensor), name
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_parameters(fresh))


def test_load_into_a_model_with_a_matching_adapter_overwrites_it(model, make_llama, tmp_path):
    save_adapter(model, tmp_path / "adapter")
    other = inject_svd_lora(make_llama(0), M, rank=RANK, alpha=ALPHA)  # zero adapter
    load_adapter(other, tmp_path / "adapter")
    ids = token_ids()
    torch.testing.assert_close(logits_of(other, ids, [0.3, 0.7]), logits_of(model, ids, [0.3, 0.7]))


def test_saved_config_and_tensors(model, tmp_path):
    out = save_adapter(model, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["format"] == "svd-lora/1"
    assert (config["num_objectives"], config["rank"], config["alpha"]) == (M, RANK, ALPHA)
    assert config["objective_names"] == ["help", "harm"]
    assert len(config["target_modules"]) == 14
    assert read_adapter_config(out) == svd_lora_config(model)
    tensors = load_file(out / "adapter.safetensors")
    assert set(tensors) == set(adapter_parameters(model))
    assert len(tensors) == 4 * 14
    assert all(name.rpartition(".")[2].startswith("lora_") for name in tensors)


def test_a_fixed_preference_model_records_the_one_lambda_it_was_trained_at(make_llama, tmp_path):
    fixed = inject_svd_lora(make_llama(0), M, rank=RANK, alpha=ALPHA, trained_at=[0.3, 0.7])
    out = save_adapter(fixed, tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["trained_at"] == [0.3, 0.7]
    assert read_adapter_config(out).trained_at == (0.3, 0.7)
    assert svd_lora_config(load_adapter(make_llama(0), out)).trained_at == (0.3, 0.7)
    steerable = inject_svd_lora(make_llama(0), M, rank=RANK, alpha=ALPHA)
    assert read_adapter_config(save_adapter(steerable, tmp_path / "b")).trained_at is None
    with pytest.raises(MoaError, match="must sum to 1"):
        inject_svd_lora(make_llama(0), M, rank=RANK, alpha=ALPHA, trained_at=[0.3, 0.3])


def test_saving_does_not_write_base_weights(model, tmp_path):
    out = save_adapter(model, tmp_path / "adapter")
    adapter_bytes = sum(p.numel() * 4 for p in adapter_parameters(model).values())
    base_bytes = sum(p.numel() * 4 for p in model.parameters() if not p.requires_grad)
    size = (out / "adapter.safetensors").stat().st_size
    assert adapter_bytes <= size <= adapter_bytes + 16_384  # the tensors plus a JSON header
    assert size < base_bytes / 2


def test_save_overwrites_a_previous_adapter(model, make_llama, tmp_path):
    save_adapter(model, tmp_path / "adapter")
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.mul_(-1.0)
    save_adapter(model, tmp_path / "adapter")
    fresh = load_adapter(make_llama(0), tmp_path / "adapter")
    ids = token_ids()
    torch.testing.assert_close(logits_of(fresh, ids, [0.3, 0.7]), logits_of(model, ids, [0.3, 0.7]))
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_objectives": M, "rank": 2, "alpha": ALPHA}, "rank"),
        ({"num_objectives": 3, "rank": RANK, "alpha": ALPHA}, "num_objectives"),
        ({"num_objectives": M, "rank": RANK, "alpha": 16.0}, "alpha"),
        (
            {"num_objectives": M, "rank": RANK, "alpha": ALPHA, "target_modules": ["q_proj"]},
            "target_modules",
        ),
    ],
    ids=["rank", "objectives", "alpha", "targets"],
)
def test_load_into_a_different_adapter_raises(model, make_llama, tmp_path, kwargs, field):
    save_adapter(model, tmp_path / "adapter")
    other = inject_svd_lora(make_llama(0), **kwargs)
    before = adapter_snapshot(other)
    with pytest.raises(MoaError, match=field):
        load_adapter(other, tmp_path / "adapter")
    after = adapter_snapshot(other)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_load_into_a_base_of_another_size_raises(model, make_llama, tmp_path):
    save_adapter(model, tmp_path / "adapter")
    with pytest.raises(MoaError, match="shape"):
        load_adapter(make_llama(0, hidden_size=48), tmp_path / "adapter")


def test_load_from_a_directory_without_an_adapter_raises(make_llama, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoaError, match=r"adapter_config\.json is missing"):
        load_adapter(make_llama(0), tmp_path / "empty")
    with pytest.raises(MoaError, match=r"adapter_config\.json is missing"):
        load_adapter(make_llama(0), tmp_path / "does-not-exist")


def test_load_from_a_peft_directory_raises(model, make_llama, tmp_path):
    export_lora(model, [0.5, 0.5], tmp_path / "peft")
    with pytest.raises(MoaError, match="not an SVD-LoRA adapter"):
        load_adapter(make_llama(0), tmp_path / "peft")


def test_load_with_the_weights_file_missing_raises_moa_error(model, make_llama, tmp_path):
    out = save_adapter(model, tmp_path / "adapter")
    (out / "adapter.safetensors").unlink()
    with pytest.raises(MoaError, match=r"adapter\.safetensors"):
        load_adapter(make_llama(0), out)


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "over-old-adapter"])
def test_a_failed_save_leaves_nothing_half_written(model, tmp_path, monkeypatch, existing):
    target = tmp_path / "adapter"
    if existing:
        save_adapter(model, target)
        old = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(adapter_io, "save_file", broken_save_file)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, target)
    assert [p.name for p in tmp_path.iterdir()] == (["adapter"] if existing else [])
    if existing:
        assert {p.name: p.read_bytes() for p in target.iterdir()} == old


# --- merge_preference ------------------------------------------------------------------------


@pytest.mark.parametrize("lam", LAMBDAS, ids=["e1", "e2", "mixed"])
def test_merge_gives_a_plain_model_equal_to_the_steerable_one(model, lam):
    ids = token_ids()
    before = adapter_snapshot(model)
    steered = logits_of(model, ids, lam)
    merged = merge_preference(model, lam)
    assert not any(isinstance(m, SVDLoRALinear) for m in merged.modules())
    assert not hasattr(merged, "svd_lora_config")
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    torch.testing.assert_close(logits_of(merged, ids), steered, atol=1e-4, rtol=0)
    # the steerable model is untouched: same adapter, still steerable, still no λ set
    after = adapter_snapshot(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert len(list(svd_lora_layers(model))) == 14
    assert all(layer.preference is None for _, layer in svd_lora_layers(model))
    torch.testing.assert_close(logits_of(model, ids, lam), steered, atol=0, rtol=0)


def test_merge_does_not_touch_the_base_weights_of_the_steerable_model(model, make_llama):
    merged = merge_preference(model, [0.3, 0.7])
    base = make_llama(0)
    for name, layer in svd_lora_layers(model):
        assert torch.equal(layer.base.weight, base.get_submodule(name).weight), name
    q_name = "model.layers.0.self_attn.q_proj"
    with preference(model, [0.3, 0.7]), torch.no_grad():
        want = base.get_submodule(q_name).weight + model.get_submodule(q_name).delta_weight()
    torch.testing.assert_close(merged.get_submodule(q_name).weight, want)


def test_merge_keeps_the_preference_that_was_set(model):
    set_preference(model, [1.0, 0.0])
    merge_preference(model, [0.0, 1.0])
    for _, layer in svd_lora_layers(model):
        assert torch.equal(layer.preference, torch.tensor([1.0, 0.0]))


def test_merge_with_normalize(model):
    ids = token_ids()
    merged = merge_preference(model, [2, 6], normalize=True)
    torch.testing.assert_close(
        logits_of(merged, ids), logits_of(model, ids, [0.25, 0.75]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("export", [False, True], ids=["merge", "export"])
def test_merge_and_export_refuse_a_per_row_preference(model, tmp_path, export):
    rows = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(MoaError, match=r"one preference of shape \[m\]"):
        if export:
            export_lora(model, rows, tmp_path / "peft")
        else:
            merge_preference(model, rows)
    assert not (tmp_path / "peft").exists()


# --- export to a standard PEFT LoRA ----------------------------------------------------------


@pytest.mark.filterwarnings(PEFT_WARNING)
@pytest.mark.parametrize("lam", [[1.0, 0.0], [0.2, 0.8]], ids=["e1", "mixed"])
def test_export_lora_loads_in_peft_with_the_same_logits(model, make_llama, tmp_path, lam):
    out = export_lora(model, lam, tmp_path / "peft")
    assert out == tmp_path / "peft"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == RANK + M
    assert config["lora_alpha"] == RANK + M  # PEFT's own scaling is 1
    assert config["peft_type"] == "LORA"

    ids = token_ids()
    steered = logits_of(model, ids, lam)
    base_logits = logits_of(make_llama(0), ids)
    peft_model = PeftModel.from_pretrained(make_llama(0), out).eval()
    got = logits_of(peft_model, ids)
    assert (steered - base_logits).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(got, steered, atol=1e-4, rtol=0)
    assert all(layer.preference is None for _, layer in svd_lora_layers(model))


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_export_at_two_preferences_differs(model, make_llama, tmp_path):
    ids = token_ids()
    results = []
    for i, lam in enumerate([[1.0, 0.0], [0.0, 1.0]]):
        out = export_lora(model, lam, tmp_path / f"peft{i}")
        results.append(logits_of(PeftModel.from_pretrained(make_llama(0), out).eval(), ids))
    assert (results[0] - results[1]).abs().max() > 1e-2


# --- DDP / DeepSpeed-like wrappers -----------------------------------------------------------


class Wrapper(nn.Module):
    """Like DistributedDataParallel: the real model sits in `.module`."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_save_from_a_wrapped_model_loads_into_a_plain_one(model, make_llama, tmp_path):
    save_adapter(Wrapper(model), tmp_path / "adapter")
    assert set(load_file(tmp_path / "adapter" / "adapter.safetensors")) == set(
        adapter_parameters(model)
    )
    fresh = load_adapter(make_llama(0), tmp_path / "adapter")
    ids = token_ids()
    torch.testing.assert_close(logits_of(fresh, ids, [0.3, 0.7]), logits_of(model, ids, [0.3, 0.7]))


def test_load_into_a_wrapped_model_with_an_adapter(model, make_llama, tmp_path):
    save_adapter(model, tmp_path / "adapter")
    inner = inject_svd_lora(make_llama(0), M, rank=RANK, alpha=ALPHA)
    load_adapter(Wrapper(inner), tmp_path / "adapter")
    ids = token_ids()
    torch.testing.assert_close(logits_of(inner, ids, [0.3, 0.7]), logits_of(model, ids, [0.3, 0.7]))


def test_merge_a_wrapped_model(model):
    ids = token_ids()
    merged = merge_preference(Wrapper(model), [0.3, 0.7])
    merged = getattr(merged, "module", merged)
    assert not any(isinstance(m, SVDLoRALinear) for m in merged.modules())
    torch.testing.assert_close(
        logits_of(merged, ids), logits_of(model, ids, [0.3, 0.7]), atol=1e-4, rtol=0
    )
