import math

import pytest
import torch

from orchestrator.errors import MoaError
from orchestrator.objectives import (
    per_objective_dpo_losses,
    per_objective_sft_losses,
    preference_loss,
    sequence_logprobs,
)
from orchestrator.objectives.losses import bradley_terry_losses


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def naive_logprobs(logits, input_ids, loss_mask):
    batch, seq, _ = logits.shape
    sums, counts = [], []
    for b in range(batch):
        total, count = 0.0, 0
        for t in range(1, seq):
            if loss_mask[b, t]:
                total += torch.log_softmax(logits[b, t - 1].double(), dim=-1)[input_ids[b, t]]
                count += 1
        sums.append(float(total))
        counts.append(float(count))
    return torch.tensor(sums), torch.tensor(counts)


# --- sequence_logprobs ---------------------------------------------------------------------------


def test_sequence_logprobs_matches_naive_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen)
    input_ids = torch.randint(0, 11, (3, 6), generator=gen)
    loss_mask = torch.tensor(
        [[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0]], dtype=torch.long
    )
    logp, count = sequence_logprobs(logits, input_ids, loss_mask)
    want_logp, want_count = naive_logprobs(logits, input_ids, loss_mask)
    assert logp.dtype == torch.float32 and count.dtype == torch.float32
    torch.testing.assert_close(logp, want_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(count, want_count)
    torch.testing.assert_close(count, torch.tensor([3.0, 5.0, 1.0]))


def test_sequence_logprobs_shift_with_last_token_only():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=gen)
    input_ids = torch.randint(0, 7, (2, 5), generator=gen)
    loss_mask = torch.zeros(2, 5)
    loss_mask[:, -1] = 1
    logp, count = sequence_logprobs(logits, input_ids, loss_mask)
    # The last token is predicted by the logits of the second-to-last position.
    want = torch.stack(
        [torch.log_softmax(logits[b, -2], dim=-1)[input_ids[b, -1]] for b in range(2)]
    )
    torch.testing.assert_close(logp, want)
    torch.testing.assert_close(count, torch.tensor([1.0, 1.0]))


def test_sequence_logprobs_ignores_masked_positions_and_position_zero():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 4, 5, generator=gen)
    input_ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[1, 0, 1, 0]])
    logp, count = sequence_logprobs(logits, input_ids, mask)
    changed = logits.clone()
    changed[0, 0] += 100.0  # predicts token 1, which is not masked
    changed[0, 2] += torch.arange(5.0)  # predicts token 3, not masked
    logp_changed, _ = sequence_logprobs(changed, input_ids, mask)
    torch.testing.assert_close(logp, logp_changed)
    assert count.item() == 1.0  # position 0 has no prediction and does not count


def test_sequence_logprobs_uniform_logits_hand_value():
    logits = torch.zeros(1, 4, 8)
    input_ids = torch.tensor([[5, 1, 2, 3]])
    mask = torch.tensor([[0, 1, 1, 1]])
    logp, count = sequence_logprobs(logits, input_ids, mask)
    assert logp.item() == pytest.approx(3 * math.log(1 / 8))
    assert count.item() == 3.0


def test_sequence_logprobs_low_precision_input_and_gradient():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 6, generator=gen).bfloat16().requires_grad_()
    input_ids = torch.randint(0, 6, (2, 5), generator=gen)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    logp, _ = sequence_logprobs(logits, input_ids, mask)
    assert logp.dtype == torch.float32
    want, _ = naive_logprobs(logits.detach().float(), input_ids, mask)
    torch.testing.assert_close(logp.detach(), want, atol=1e-4, rtol=1e-4)
    logp.sum().backward()
    assert logits.grad is not None
    assert logits.grad[1, 0].abs().sum() == 0  # predicts token 1, not masked
    assert logits.grad[0, 4].abs().sum() == 0  # the last position predicts nothing
    assert logits.grad[1, 1].abs().sum() > 0


def test_sequence_logprobs_rejects_bad_shapes():
    with pytest.raises(MoaError, match="loss_mask"):
        sequence_logprobs(
            torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2)
        )


# --- preference_loss ---------------------------------------------------------------------------


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_preference_loss_hand_values():
    # h = (−3 − (−4)) − (−6 − (−4)) = 1 + 2 = 3; β·h = 0.3; −log σ(0.3) = log(1 + e^−0.3)
    loss = preference_loss(t(-3.0), t(-6.0), t(-4.0), t(-4.0), beta=0.1)
    assert loss.item() == pytest.approx(0.5543552444685271, abs=1e-6)
    # Swapping chosen and rejected: −log σ(−0.3)
    loss = preference_loss(t(-6.0), t(-3.0), t(-4.0), t(-4.0), beta=0.1)
    assert loss.item() == pytest.approx(0.8543552444685272, abs=1e-6)


def test_preference_loss_with_margin():
    # −log σ(0.3 − 0.1) = log(1 + e^−0.2)
    loss = preference_loss(t(-3.0), t(-6.0), t(-4.0), t(-4.0), beta=0.1, margin=0.1)
    assert loss.item() == pytest.approx(0.5981388693815918, abs=1e-6)
    # Per-pair tensor margin
    loss = preference_loss(
        t(-3.0, -3.0), t(-6.0, -6.0), t(-4.0, -4.0), t(-4.0, -4.0), beta=0.1, margin=t(0.0, 0.1)
    )
    torch.testing.assert_close(loss, t(0.5543552444685271, 0.5981388693815918))


def test_preference_loss_with_nll():
    # NLL term: 0.5 · (−(−3) / 3) = 0.5
    loss = preference_loss(
        t(-3.0), t(-6.0), t(-4.0), t(-4.0), beta=0.1, nll_weight=0.5, chosen_lengths=t(3.0)
    )
    assert loss.item() == pytest.approx(0.5543552444685271 + 0.5, abs=1e-6)
    with pytest.raises(MoaError, match="chosen_lengths"):
        preference_loss(t(-3.0), t(-6.0), t(-4.0), t(-4.0), beta=0.1, nll_weight=0.5)


def test_preference_loss_is_stable_for_large_margins():
    loss = preference_loss(t(0.0), t(-1e4), t(0.0), t(0.0), beta=1.0)
    assert loss.item() == 0.0
    loss = preference_loss(t(-1e4), t(0.0), t(0.0), t(0.0), beta=1.0)
    assert loss.item() == pytest.approx(1e4)


def test_preference_loss_rejects_bad_beta():
    with pytest.raises(MoaError, match="beta"):
        preference_loss(t(-3.0), t(-6.0), t(-4.0), t(-4.0), beta=0.0)


# --- per_objective_dpo_losses ------------------------------------------------------------------


def test_dpo_signs_per_objective():
    # One pair; objective 0 prefers a, objective 1 prefers b. h_{a over b} = 3.
    losses = per_objective_dpo_losses(
        t(-3.0), t(-6.0), t(-4.0), t(-4.0), torch.tensor([[1, -1]]), beta=0.1
    )
    torch.testing.assert_close(losses, t(neg_log_sigmoid(0.3), neg_log_sigmoid(-0.3)))


def test_dpo_ties_are_excluded_from_the_mean():
    # h of a over b: pair 0: 1 + 2 = 3; pair 1: 1 + 0 = 1; pair 2: −1 − 1 = −2.
    policy_a, policy_b = t(-3.0, -3.0, -5.0), t(-6.0, -4.0, -3.0)
    reference_a, reference_b = t(-4.0, -4.0, -4.0), t(-4.0, -4.0, -4.0)
    signs = torch.tensor([[1, 0], [0, -1], [-1, -1]])
    losses = per_objective_dpo_losses(policy_a, policy_b, reference_a, reference_b, signs, beta=0.1)
    want_0 = (neg_log_sigmoid(0.3) + neg_log_sigmoid(0.2)) / 2  # pairs 0 and 2 (b preferred)
    want_1 = (neg_log_sigmoid(-0.1) + neg_log_sigmoid(0.2)) / 2  # pairs 1 and 2
    torch.testing.assert_close(losses, t(want_0, want_1))


def test_dpo_all_tie_objective_is_zero_and_backward_works():
    policy_a = t(-3.0, -5.0).requires_grad_()
    policy_b = t(-6.0, -3.0).requires_grad_()
    signs = torch.tensor([[1, 0], [-1, 0]])
    losses = per_objective_dpo_losses(
        policy_a, policy_b, t(-4.0, -4.0), t(-4.0, -4.0), signs, beta=0.1
    )
    assert losses[1].item() == 0.0
    assert losses[1].grad_fn is not None
    losses[1].backward(retain_graph=True)
    assert torch.equal(policy_a.grad, torch.zeros(2))
    losses.sum().backward()
    assert torch.isfinite(policy_a.grad).all() and policy_a.grad.abs().sum() > 0


def test_dpo_gradient_directions():
    policy_a = t(-3.0).requires_grad_()
    policy_b = t(-6.0).requires_grad_()
    signs = torch.tensor([[1, -1]])
    losses = per_objective_dpo_losses(policy_a, policy_b, t(-4.0), t(-4.0), signs, beta=0.1)
    (grad_a_0, grad_b_0) = torch.autograd.grad(losses[0], (policy_a, policy_b), retain_graph=True)
    (grad_a_1, grad_b_1) = torch.autograd.grad(losses[1], (policy_a, policy_b))
    # Objective 0 prefers a: descending its loss raises log p(a) and lowers log p(b).
    assert grad_a_0.item() < 0 < grad_b_0.item()
    # Objective 1 prefers b: the opposite.
    assert grad_b_1.item() < 0 < grad_a_1.item()
    # d/dx −log σ(βx) = −β σ(−βx), at x = 3, β = 0.1
    assert grad_a_0.item() == pytest.approx(-0.1 / (1 + math.exp(0.3)), abs=1e-6)


def test_dpo_with_nll_uses_preferred_lengths():
    signs = torch.tensor([[1, -1]])
    losses = per_objective_dpo_losses(
        t(-3.0), t(-6.0), t(-4.0), t(-4.0), signs, beta=0.1, nll_weight=0.1,
        lengths_a=t(3.0), lengths_b=t(2.0),
    )  # fmt: skip
    # NLL of a: 3/3 = 1; of b: 6/2 = 3
    torch.testing.assert_close(
        losses, t(neg_log_sigmoid(0.3) + 0.1 * 1.0, neg_log_sigmoid(-0.3) + 0.1 * 3.0)
    )
    with pytest.raises(MoaError, match="lengths_a"):
        per_objective_dpo_losses(
            t(-3.0), t(-6.0), t(-4.0), t(-4.0), signs, beta=0.1, nll_weight=0.1
        )


def test_dpo_rejects_bad_signs():
    with pytest.raises(MoaError, match="signs"):
        per_objective_dpo_losses(
            t(-3.0), t(-6.0), t(-4.0), t(-4.0), torch.tensor([[2, 0]]), beta=0.1
        )
    with pytest.raises(MoaError, match="signs"):
        per_objective_dpo_losses(t(-3.0), t(-6.0), t(-4.0), t(-4.0), torch.tensor([1, 0]), beta=0.1)


# --- per_objective_sft_losses ------------------------------------------------------------------


def test_sft_hand_values():
    # Per-token NLL: a = (6/3, 2/2) = (2, 1), b = (10/2, 16/4) = (5, 4)
    policy_a, lengths_a = t(-6.0, -2.0), t(3.0, 2.0)
    policy_b, lengths_b = t(-10.0, -16.0), t(2.0, 4.0)
    signs = torch.tensor([[1, -1, 0], [1, 0, 0]])
    losses = per_objective_sft_losses(policy_a, policy_b, lengths_a, lengths_b, signs)
    # objective 0: a, a -> (2 + 1) / 2; objective 1: b of pair 0 -> 5; objective 2: all ties -> 0
    torch.testing.assert_close(losses, t(1.5, 5.0, 0.0))


def test_sft_all_tie_has_grad_fn_and_gradient_sign():
    policy_a = t(-6.0, -2.0).requires_grad_()
    policy_b = t(-10.0, -16.0).requires_grad_()
    signs = torch.tensor([[1, 0], [-1, 0]])
    losses = per_objective_sft_losses(policy_a, policy_b, t(3.0, 2.0), t(2.0, 4.0), signs)
    assert losses[1].grad_fn is not None
    losses.sum().backward()
    # objective 0 = mean(6/3, 16/4): d/d policy_a[0] = −1/(2·3), d/d policy_b[1] = −1/(2·4)
    torch.testing.assert_close(policy_a.grad, t(-1 / 6, 0.0))
    torch.testing.assert_close(policy_b.grad, t(0.0, -1 / 8))


# --- bradley_terry_losses ------------------------------------------------------------------------


def test_bradley_terry_losses_hand_values_leave_ties_out():
    rewards_a = torch.tensor([[2.0, 0.0], [0.5, 1.0], [1.0, 3.0]])
    rewards_b = torch.tensor([[1.0, 1.0], [1.5, 1.0], [0.0, 0.0]])
    signs = torch.tensor([[1.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])  # objective 1: one non-tie pair
    losses = bradley_terry_losses(rewards_a, rewards_b, signs)
    # objective 0: −log σ(1), −log σ(1), −log σ(1) over 3 pairs; objective 1: −log σ(1) alone
    assert losses.tolist() == pytest.approx([neg_log_sigmoid(1.0), neg_log_sigmoid(1.0)])
    # Normalised by a global batch's non-tie counts instead of this batch's.
    halved = bradley_terry_losses(rewards_a, rewards_b, signs, torch.tensor([6.0, 2.0]))
    assert halved.tolist() == pytest.approx([neg_log_sigmoid(1.0) / 2, neg_log_sigmoid(1.0) / 2])
    wrong_way = bradley_terry_losses(rewards_b, rewards_a, signs)
    assert wrong_way.tolist() == pytest.approx([neg_log_sigmoid(-1.0), neg_log_sigmoid(-1.0)])
