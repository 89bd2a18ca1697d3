import pytest
import torch
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import (
    SVDLoRALinear,
    adapter_disabled,
    adapter_parameters,
    inject_svd_lora,
    preference,
    set_preference,
    svd_lora_config,
    svd_lora_layers,
)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PARENT = {p: "self_attn" if p[0] in "qkvo" else "mlp" for p in PROJECTIONS}
ADAPTER_TENSORS = ("lora_u", "lora_v", "lora_sigma", "lora_scale")
RANK, ALPHA = 4, 8.0  # α/k = 2


def token_ids(batch: int, length: int, vocab: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def steerable(make_llama, perturb=None, num_objectives: int = 2, seed: int = 0):
    model = inject_svd_lora(make_llama(seed), num_objectives, rank=RANK, alpha=ALPHA)
    if perturb is not None:
        perturb(model)
    return model


def hand_weight(layer: SVDLoRALinear, lam: torch.Tensor) -> torch.Tensor:
    """W(λ) = W0 + (α/k)·U·diag(σ, s·λ)·Vᵀ, written out term by term."""
    k = layer.lora_sigma.shape[0]
    diag = torch.zeros(k + lam.shape[0], k + lam.shape[0])
    for i in range(k):
        diag[i, i] = layer.lora_sigma[i]
    for j in range(lam.shape[0]):
        diag[k + j, k + j] = layer.lora_scale[0] * lam[j]
    scaling = ALPHA / RANK
    return layer.base.weight + scaling * layer.lora_u @ diag @ layer.lora_v


# --- initialisation: exactly the base model --------------------------------------------------


@pytest.mark.parametrize(
    "lam",
    [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [[1.0, 0.0], [0.5, 0.5], [0.1, 0.9]]],
    ids=["e1", "e2", "mixed", "per-row"],
)
def test_zero_init_gives_the_base_logits(make_llama, lam):
    ids = token_ids(3, 7)
    base_logits = logits_of(make_llama(0), ids)
    model = steerable(make_llama)
    set_preference(model, lam)
    torch.testing.assert_close(logits_of(model, ids), base_logits, atol=1e-6, rtol=0)


def test_init_is_panacea_sigma_and_s_zero_u_v_gaussian(make_llama):
    model = inject_svd_lora(make_llama(0), 2, rank=RANK, alpha=ALPHA, init_std=0.02)
    layers = [layer for _, layer in svd_lora_layers(model)]
    assert all(torch.equal(layer.lora_sigma, torch.zeros(RANK)) for layer in layers)
    assert all(torch.equal(layer.lora_scale, torch.zeros(1)) for layer in layers)
    u = torch.cat([layer.lora_u.flatten() for layer in layers])
    v = torch.cat([layer.lora_v.flatten() for layer in layers])
    for values in (u, v):
        assert abs(values.mean().item()) < 0.002
        assert values.std().item() == pytest.approx(0.02, rel=0.05)


# --- which layers are adapted; what is trainable ----------------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied-embeddings"])
def test_default_targets_are_the_seven_projections_of_each_layer(make_llama, tied):
    model = inject_svd_lora(make_llama(0, tie_word_embeddings=tied), 2, rank=RANK, alpha=ALPHA)
    expected = {f"model.layers.{i}.{PARENT[p]}.{p}" for i in range(2) for p in PROJECTIONS}
    assert {name for name, _ in svd_lora_layers(model)} == expected
    assert set(svd_lora_config(model).target_modules) == expected
    assert type(model.lm_head) is nn.Linear
    assert type(model.model.embed_tokens) is nn.Embedding
    assert not any(isinstance(m, SVDLoRALinear) for m in model.lm_head.modules())


@pytest.mark.parametrize(
    "targets",
    [["q_proj", "v_proj"], ["self_attn.q_proj", "self_attn.v_proj"]],
    ids=["short", "suffix"],
)
def test_target_modules_adapts_only_those(make_llama, targets):
    model = inject_svd_lora(make_llama(0), 2, rank=RANK, alpha=ALPHA, target_modules=targets)
    expected = {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
    assert {name for name, _ in svd_lora_layers(model)} == expected
    for i in range(2):
        attn, mlp = model.model.layers[i].self_attn, model.model.layers[i].mlp
        for plain in (attn.k_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            assert type(plain) is nn.Linear
    assert len(adapter_parameters(model)) == 4 * len(expected)


@pytest.mark.parametrize("bad", ["qq_proj", "lm_head", "embed_tokens"])
def test_unknown_or_excluded_target_raises_naming_it(make_llama, bad):
    model = make_llama(0)
    with pytest.raises(MoaError, match=bad):
        inject_svd_lora(model, 2, target_modules=["q_proj", bad])
    assert not list(svd_lora_layers(model))
    assert getattr(model, "svd_lora_config", None) is None


def test_base_frozen_and_only_adapter_tensors_trainable_with_right_shapes(make_llama):
    model = inject_svd_lora(make_llama(0), 3, rank=RANK, alpha=ALPHA)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert {name.rpartition(".")[2] for name in trainable} == set(ADAPTER_TENSORS)
    assert len(trainable) == 4 * 14
    assert set(trainable) == set(adapter_parameters(model))
    assert not model.model.embed_tokens.weight.requires_grad
    assert not model.lm_head.weight.requires_grad
    width = RANK + 3
    for _, layer in svd_lora_layers(model):
        assert not layer.base.weight.requires_grad
        n_out, n_in = layer.base.weight.shape
        assert layer.lora_u.shape == (n_out, width)
        assert layer.lora_v.shape == (width, n_in)
        assert layer.lora_sigma.shape == (RANK,)
        assert layer.lora_scale.shape == (1,)
    # the preference is a buffer, never a parameter nor part of the state dict
    assert not any("preference" in name for name in model.state_dict())


# --- the forward pass against W(λ) computed by hand ------------------------------------------


@pytest.mark.parametrize(
    "lam", [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], ids=["e1", "e3", "mixed"]
)
def test_layer_output_equals_hand_computed_weight(make_llama, perturb, lam):
    model = steerable(make_llama, perturb, num_objectives=3)
    set_preference(model, lam)
    lam = torch.tensor(lam)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    layer = model.model.layers[1].mlp.down_proj  # n_in 64 ≠ n_out 32: catches U/V mix-ups
    with torch.no_grad():
        want = x @ hand_weight(layer, lam).T
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            layer.delta_weight(), hand_weight(layer, lam) - layer.base.weight, atol=1e-6, rtol=1e-5
        )
        assert (layer(x) - x @ layer.base.weight.T).abs().max() > 0.1


def test_standalone_layer_with_bias_equals_hand_computed_weight():
    torch.manual_seed(0)
    base = nn.Linear(12, 10, bias=True)
    layer = SVDLoRALinear(base, rank=RANK, num_objectives=2, alpha=ALPHA)
    with torch.no_grad():
        layer.lora_sigma.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
        layer.lora_scale.fill_(1.7)
        layer.lora_u.normal_(0, 0.3)
        layer.lora_v.normal_(0, 0.3)
    layer.preference = torch.tensor([0.25, 0.75])
    x = torch.randn(4, 12)
    with torch.no_grad():
        want = x @ hand_weight(layer, torch.tensor([0.25, 0.75])).T + base.bias
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


# --- per-row preferences ---------------------------------------------------------------------

ROWS = [[1.0, 0.0], [0.5, 0.5], [0.1, 0.9]]


def test_per_row_batch_equals_each_row_alone_on_model_logits(make_llama, perturb):
    model = steerable(make_llama, perturb)
    ids = token_ids(3, 9)
    set_preference(model, ROWS)
    batched = logits_of(model, ids)
    alone = []
    for row, lam in enumerate(ROWS):
        set_preference(model, lam)
        alone.append(logits_of(model, ids[row : row + 1]))
    assert (batched - torch.cat(alone)).abs().max() <= 1e-5
    # meaningful: row 0 really sees a different model at λ_0 than at λ_2
    set_preference(model, ROWS[2])
    assert (logits_of(model, ids[:1]) - alone[0]).abs().max() > 1e-2


def test_per_row_preference_on_3d_input_through_one_layer(make_llama, perturb):
    model = steerable(make_llama, perturb)
    layer = model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(5))
    set_preference(model, ROWS)
    with torch.no_grad():
        batched = layer(x)
        for row, lam in enumerate(ROWS):
            want = x[row] @ hand_weight(layer, torch.tensor(lam)).T
            assert (batched[row] - want).abs().max() <= 1e-5
            set_preference(model, lam)
            assert (layer(x[row : row + 1])[0] - batched[row]).abs().max() <= 1e-5
            set_preference(model, ROWS)


@pytest.mark.parametrize("batch", [1, 3])
def test_per_row_preference_with_wrong_row_count_raises(make_llama, batch):
    model = steerable(make_llama)
    set_preference(model, [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(MoaError, match="per-row preference has 2 rows"):
        logits_of(model, token_ids(batch, 5))


# --- λ steers the output; gradients at initialisation ----------------------------------------


def test_preference_changes_output_once_adapter_is_non_zero(make_llama, perturb):
    ids = token_ids(2, 6)
    model = steerable(make_llama)
    out = {}
    for name, lam in (("e1", [1.0, 0.0]), ("e2", [0.0, 1.0])):
        set_preference(model, lam)
        out[name] = logits_of(model, ids)
    torch.testing.assert_close(out["e1"], out["e2"], atol=0, rtol=0)  # zero adapter: no effect
    perturb(model)
    for name, lam in (("e1", [1.0, 0.0]), ("e2", [0.0, 1.0])):
        set_preference(model, lam)
        out[name] = logits_of(model, ids)
    assert (out["e1"] - out["e2"]).abs().max() > 1e-2


def test_preference_acts_only_through_s(make_llama, perturb):
    model = steerable(make_llama, perturb)
    with torch.no_grad():
        for _, layer in svd_lora_layers(model):
            layer.lora_scale.zero_()
    ids = token_ids(2, 6)
    set_preference(model, [1.0, 0.0])
    e1 = logits_of(model, ids)
    set_preference(model, [0.0, 1.0])
    torch.testing.assert_close(logits_of(model, ids), e1, atol=1e-6, rtol=0)


def test_gradient_reaches_s_at_init_and_u_v_get_none(make_llama):
    """At the Panacea init (σ = s = 0, so diag = 0) the only non-zero gradients are those of σ
    and s: ∂L/∂U and ∂L/∂V are both multiplied by diag and are exactly zero. That is expected —
    U and V start moving one step later, once σ and s are non-zero."""
    model = steerable(make_llama)
    set_preference(model, [0.3, 0.7])
    ids = token_ids(2, 8)
    logits = model(input_ids=ids).logits
    loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 128), ids[:, 1:].reshape(-1))
    loss.backward()
    for name, layer in svd_lora_layers(model):
        assert layer.lora_scale.grad is not None and layer.lora_scale.grad.abs().item() > 0, name
        assert layer.lora_sigma.grad.abs().max() > 0, name
        assert torch.count_nonzero(layer.lora_u.grad) == 0, name
        assert torch.count_nonzero(layer.lora_v.grad) == 0, name
        assert layer.base.weight.grad is None
    assert model.lm_head.weight.grad is None


def test_gradient_of_s_matches_closed_form():
    torch.manual_seed(0)
    layer = SVDLoRALinear(nn.Linear(6, 5, bias=False), rank=3, num_objectives=2, alpha=6.0)
    lam = torch.tensor([0.3, 0.7])
    layer.preference = lam
    x, g = torch.randn(4, 6), torch.randn(4, 5)
    (layer(x) * g).sum().backward()
    # ∂/∂s Σ g ⊙ (α/k)·(xV ⊙ [σ, sλ]) Uᵀ = (α/k) Σ_b Σ_j λ_j (x Vᵀ_{k+j})(g U_{k+j})
    xv = x @ layer.lora_v.detach().T  # [4, k+m]
    gu = g @ layer.lora_u.detach()  # [4, k+m]
    want = 2.0 * ((xv[:, 3:] * gu[:, 3:]) * lam).sum()
    torch.testing.assert_close(layer.lora_scale.grad, want.reshape(1), atol=1e-6, rtol=1e-5)
    assert want.abs() > 1e-3


# --- preference() and adapter_disabled() -----------------------------------------------------


def layer_preferences(model) -> list:
    return [layer.preference for _, layer in svd_lora_layers(model)]


def test_running_without_preference_raises_mentioning_set_preference(make_llama):
    model = steerable(make_llama)
    with pytest.raises(MoaError, match="set_preference"):
        logits_of(model, token_ids(1, 4))


def test_preference_context_restores_none(make_llama, perturb):
    model = steerable(make_llama, perturb)
    ids = token_ids(1, 5)
    with preference(model, [0.0, 1.0]) as inside:
        assert inside is model
        assert all(torch.equal(p, torch.tensor([0.0, 1.0])) for p in layer_preferences(model))
        logits_of(model, ids)
    assert all(p is None for p in layer_preferences(model))
    with pytest.raises(MoaError, match="set_preference"):
        logits_of(model, ids)


def test_preference_context_restores_previous_value_and_nests(make_llama, perturb):
    model = steerable(make_llama, perturb)
    ids = token_ids(2, 5)
    set_preference(model, [1.0, 0.0])
    at_e1 = logits_of(model, ids)
    with preference(model, [0.0, 1.0]):
        at_e2 = logits_of(model, ids)
        with preference(model, [[0.5, 0.5], [0.5, 0.5]]):
            logits_of(model, ids)
        torch.testing.assert_close(logits_of(model, ids), at_e2, atol=0, rtol=0)
    assert all(torch.equal(p, torch.tensor([1.0, 0.0])) for p in layer_preferences(model))
    torch.testing.assert_close(logits_of(model, ids), at_e1, atol=0, rtol=0)
    assert (at_e1 - at_e2).abs().max() > 1e-2


@pytest.mark.parametrize("previous", [None, [1.0, 0.0]], ids=["none", "e1"])
def test_preference_context_restores_when_the_block_raises(make_llama, previous):
    model = steerable(make_llama)
    if previous is not None:
        set_preference(model, previous)
    with pytest.raises(RuntimeError, match="boom"), preference(model, [0.0, 1.0]):
        raise RuntimeError("boom")
    for p in layer_preferences(model):
        assert p is None if previous is None else torch.equal(p, torch.tensor(previous))


def test_invalid_preference_in_context_leaves_state_alone(make_llama):
    model = steerable(make_llama)
    set_preference(model, [1.0, 0.0])
    with pytest.raises(MoaError, match="non-negative"), preference(model, [-1.0, 2.0]):
        pytest.fail("the block must not run")
    assert all(torch.equal(p, torch.tensor([1.0, 0.0])) for p in layer_preferences(model))


def test_adapter_disabled_gives_base_logits_and_restores(make_llama, perturb):
    ids = token_ids(2, 6)
    base_logits = logits_of(make_llama(0), ids)
    model = steerable(make_llama, perturb)
    set_preference(model, [0.3, 0.7])
    adapted = logits_of(model, ids)
    assert (adapted - base_logits).abs().max() > 1e-2
    with adapter_disabled(model) as inside:
        assert inside is model
        torch.testing.assert_close(logits_of(model, ids), base_logits, atol=1e-6, rtol=0)
    assert all(layer.adapter_enabled for _, layer in svd_lora_layers(model))
    torch.testing.assert_close(logits_of(model, ids), adapted, atol=0, rtol=0)
    with pytest.raises(RuntimeError), adapter_disabled(model):
        raise RuntimeError
    torch.testing.assert_close(logits_of(model, ids), adapted, atol=0, rtol=0)


def test_adapter_disabled_needs_no_preference(make_llama, perturb):
    ids = token_ids(1, 6)
    base_logits = logits_of(make_llama(0), ids)
    model = steerable(make_llama, perturb)
    with adapter_disabled(model):
        torch.testing.assert_close(logits_of(model, ids), base_logits, atol=1e-6, rtol=0)


# --- argument checks -------------------------------------------------------------------------


def test_injecting_twice_raises(make_llama):
    model = steerable(make_llama)
    with pytest.raises(MoaError, match="already has an SVD-LoRA adapter"):
        inject_svd_lora(model, 2)
    assert len(list(svd_lora_layers(model))) == 14
    assert not any(isinstance(layer.base, SVDLoRALinear) for _, layer in svd_lora_layers(model))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank must be ≥ 1; got 0"),
        ({"rank": -2}, "rank must be ≥ 1; got -2"),
        ({"alpha": 0.0}, "alpha must be > 0; got 0"),
        ({"alpha": -8.0}, "alpha must be > 0; got -8"),
        ({"num_objectives": 0}, "num_objectives must be ≥ 1; got 0"),
        ({"objective_names": ["help"]}, "objective_names has 1 names for 2 objectives"),
    ],
)
def test_invalid_injection_arguments_raise_and_leave_model_alone(make_llama, kwargs, message):
    model = make_llama(0)
    args = {"num_objectives": 2, "rank": RANK, "alpha": ALPHA, **kwargs}
    with pytest.raises(MoaError, match=message):
        inject_svd_lora(model, **args)
    assert not list(svd_lora_layers(model))
    assert all(p.requires_grad for p in model.parameters())


def test_model_without_adapter_raises(make_llama):
    with pytest.raises(MoaError, match="inject_svd_lora"):
        set_preference(make_llama(0), [1.0, 0.0])


# --- DDP / DeepSpeed-like wrappers -----------------------------------------------------------


class Wrapper(nn.Module):
    """Like DistributedDataParallel: the real model sits in `.module`."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_wrapped_model_works_with_the_preference_api(make_llama, perturb):
    model = steerable(make_llama, perturb)
    wrapped = Wrapper(model)
    ids = token_ids(2, 6)
    assert svd_lora_config(wrapped) is svd_lora_config(model)
    assert [n for n, _ in svd_lora_layers(wrapped)] == [n for n, _ in svd_lora_layers(model)]
    assert not any(name.startswith("module.") for name in adapter_parameters(wrapped))
    assert set(adapter_parameters(wrapped)) == set(adapter_parameters(model))

    set_preference(wrapped, [0.2, 0.8])
    assert all(torch.equal(p, torch.tensor([0.2, 0.8])) for p in layer_preferences(model))
    via_wrapper = logits_of(wrapped, ids)
    set_preference(model, [0.2, 0.8])
    torch.testing.assert_close(via_wrapper, logits_of(model, ids), atol=0, rtol=0)

    with preference(wrapped, [[1.0, 0.0], [0.0, 1.0]]):
        assert all(p.shape == (2, 2) for p in layer_preferences(model))
        logits_of(wrapped, ids)
    assert all(torch.equal(p, torch.tensor([0.2, 0.8])) for p in layer_preferences(model))

    base_logits = logits_of(make_llama(0), ids)
    with adapter_disabled(wrapped):
        torch.testing.assert_close(logits_of(wrapped, ids), base_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits_of(wrapped, ids), via_wrapper, atol=0, rtol=0)


def test_adapter_and_preference_stay_fp32_on_a_bf16_base(make_llama, perturb):
    model = make_llama().to(torch.bfloat16)
    inject_svd_lora(model, 2, rank=4, alpha=8.0)
    assert all(p.dtype == torch.float32 for p in adapter_parameters(model).values())
    perturb(model)
    set_preference(model, [0.1, 0.9])
    layer = next(layer for _, layer in svd_lora_layers(model))
    assert layer.preference.dtype == torch.float32
    assert layer.preference.tolist() == pytest.approx([0.1, 0.9], abs=1e-7)  # bf16 gives 0.1001
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_default_targets_fall_back_to_every_linear_but_the_output_embedding():
    class TwoLayerLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in, self.fc_out, self.head = nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 5)

        def get_output_embeddings(self):
            return self.head

    model = inject_svd_lora(TwoLayerLM(), 2, rank=2)
    assert svd_lora_config(model).target_modules == ("fc_in", "fc_out")
