import math

import numpy as np
import pytest
import torch

from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import inject_svd_lora, set_preference, svd_lora_layers
from orchestrator.objectives.preference import validate_preference

# (preference, message fragment): each problem has its own message.
INVALID = {
    "wrong-length": ([0.2, 0.3, 0.5], r"shape \[2\] or \[batch, 2\].*got shape \[3\]"),
    "one-weight": ([1.0], r"got shape \[1\]"),
    "3-d": ([[[0.5, 0.5]]], r"got shape \[1, 1, 2\]"),
    "scalar": (1.0, r"got shape \[\]"),
    "empty": ([], r"got shape \[0\]"),
    "empty-batch": (torch.zeros(0, 2), r"got shape \[0, 2\]"),
    "negative": ([-0.5, 1.5], r"non-negative; got \[-0.5, 1.5\]"),
    "nan": ([math.nan, 1.0], "finite"),
    "inf": ([math.inf, 0.0], "finite"),
    "minus-inf": ([-math.inf, 1.0], "finite"),
    "all-zero": ([0.0, 0.0], "must not all be zero"),
    "sum-above-1": ([0.5, 0.6], r"sum to 1 \(within 1e-06\); got \[0.5, 0.6\].*normalize=True"),
    "sum-below-1": ([0.3, 0.3], "sum to 1"),
    "sum-off-by-2e-6": ([0.5, 0.5 + 2e-6], "sum to 1"),
    "strings": (["a", "b"], "list of 2 numbers"),
    "none": (None, "list of 2 numbers"),
    "ragged": ([[0.5, 0.5], [1.0]], "list of 2 numbers"),
    "row-wrong-sum": ([[0.5, 0.5], [0.7, 0.7]], "sum to 1"),
    "row-negative": ([[0.5, 0.5], [-1.0, 2.0]], "non-negative"),
    "row-zero": ([[1.0, 0.0], [0.0, 0.0]], "must not all be zero"),
    "row-nan": ([[1.0, 0.0], [math.nan, 1.0]], "finite"),
}
# Problems that normalize=True must still reject.
STILL_INVALID = ["negative", "nan", "inf", "all-zero", "row-zero", "row-negative", "wrong-length"]


@pytest.fixture(scope="module")
def model(make_llama):
    return inject_svd_lora(make_llama(vocab_size=64, num_layers=1), 2, rank=2, alpha=4.0)


@pytest.mark.parametrize(("pref", "message"), INVALID.values(), ids=INVALID.keys())
def test_validate_preference_rejects_each_problem_with_its_message(pref, message):
    with pytest.raises(MoaError, match=message):
        validate_preference(pref, 2)


@pytest.mark.parametrize(("pref", "message"), INVALID.values(), ids=INVALID.keys())
def test_set_preference_rejects_and_keeps_the_previous_preference(model, pref, message):
    set_preference(model, [0.25, 0.75])
    with pytest.raises(MoaError, match=message):
        set_preference(model, pref)
    for _, layer in svd_lora_layers(model):
        assert torch.equal(layer.preference, torch.tensor([0.25, 0.75]))


@pytest.mark.parametrize("name", STILL_INVALID)
def test_normalize_still_rejects(model, name):
    pref, message = INVALID[name]
    with pytest.raises(MoaError, match=message):
        validate_preference(pref, 2, normalize=True)
    with pytest.raises(MoaError, match=message):
        set_preference(model, pref, normalize=True)


@pytest.mark.parametrize(
    "pref",
    [
        [0.5, 0.5 + 5e-8],
        [0.5, 0.5 - 9e-8],
        [1 / 3, 1 / 3, 1 / 3],
        [0.1] * 10,
    ],
    ids=["above-by-5e-8", "below-by-9e-8", "thirds", "tenths"],
)
def test_sum_within_tolerance_is_accepted(pref):
    lam = validate_preference(pref, len(pref))
    assert lam.dtype == torch.float32
    assert lam.shape == (len(pref),)
    torch.testing.assert_close(lam, torch.tensor(pref, dtype=torch.float32))


@pytest.mark.parametrize(
    "pref",
    [
        [0.25, 0.75],
        (0.25, 0.75),
        np.array([0.25, 0.75]),
        torch.tensor([0.25, 0.75], dtype=torch.float64),
        torch.tensor([0.25, 0.75], dtype=torch.float16),
    ],
    ids=["list", "tuple", "numpy", "float64", "float16"],
)
def test_accepted_inputs_become_float32_vectors(pref):
    lam = validate_preference(pref, 2)
    assert lam.dtype == torch.float32 and lam.shape == (2,)
    torch.testing.assert_close(lam, torch.tensor([0.25, 0.75]))


def test_integer_vertex_is_accepted():
    torch.testing.assert_close(validate_preference([0, 1], 2), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(
        validate_preference(torch.tensor([1, 0, 0]), 3), torch.tensor([1.0, 0.0, 0.0])
    )


def test_per_row_preferences_keep_their_shape():
    rows = [[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]]
    lam = validate_preference(rows, 2)
    assert lam.shape == (3, 2) and lam.dtype == torch.float32
    torch.testing.assert_close(lam, torch.tensor(rows))


def test_normalize_rescales_to_the_simplex():
    torch.testing.assert_close(
        validate_preference([2, 6], 2, normalize=True), torch.tensor([0.25, 0.75])
    )
    torch.testing.assert_close(
        validate_preference([[1.0, 1.0], [0.0, 3.0], [0.5, 0.5]], 2, normalize=True),
        torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.5, 0.5]]),
    )
    # without normalize the same vector is an error
    with pytest.raises(MoaError, match="sum to 1"):
        validate_preference([2, 6], 2)


def test_set_preference_normalize_writes_the_rescaled_vector(model):
    set_preference(model, [2, 6], normalize=True)
    layers = [layer for _, layer in svd_lora_layers(model)]
    assert len(layers) == 7
    for layer in layers:
        assert layer.preference.dtype == layer.lora_scale.dtype
        torch.testing.assert_close(layer.preference, torch.tensor([0.25, 0.75]))


def test_number_of_objectives_comes_from_the_model(model):
    with pytest.raises(MoaError, match=r"shape \[2\]"):
        set_preference(model, [0.2, 0.3, 0.5])
    with pytest.raises(MoaError, match=r"shape \[3\]"):
        validate_preference([0.5, 0.5], 3)
