from dataclasses import replace

import pytest
import torch

from orchestrator.data.encoding import encode_prompt
from orchestrator.errors import MoaError
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.generate import generate
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import Piece, SamplingParams, next_tokens
from orchestrator.model.svd_lora import (
    adapter_disabled,
    preference,
    svd_lora_layers,
)

PROMPTS = [
    "Hi",
    "How do I start a campfire safely in the woods at night?",
    "What are the steps to grow tomatoes?",
    "Tell me a joke.",
]
LAMBDAS = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]]
GREEDY = SamplingParams(max_new_tokens=10)


def left_pad(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [encode_prompt(tokenizer, p, 64) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def decoded(model, ids, mask, params, stops, pad) -> list[list[int]]:
    """Each left-padded row's new tokens, all rows in one continuous decoder (the λ rows the
    model holds, in order)."""
    lam = next(layer.preference for _, layer in svd_lora_layers(model))
    decoder = ContinuousDecoder(model, pad, stops, max_num_seqs=len(ids), max_prompt_tokens=64)
    for row in range(len(ids)):
        prompt = ids[row][mask[row].bool()].tolist()
        decoder.add(row, prompt, lam[row].tolist() if lam.dim() == 2 else lam.tolist(), params[row])
    out: list[list[int]] = [[] for _ in range(len(ids))]
    while decoder.has_work():
        for row, piece in decoder.step():
            if piece.token is not None:
                out[row].append(piece.token)
    return out


# --- batched generation with one λ per row ---------------------------------------------------


@pytest.mark.parametrize("batch_size", [4, 3], ids=["one-batch", "two-chunks"])
def test_per_row_preferences_in_a_batch_equal_each_prompt_alone(model, tokenizer, batch_size):
    lengths = {len(encode_prompt(tokenizer, p, 64)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # all different: left padding matters
    batched = generate(model, tokenizer, PROMPTS, LAMBDAS, GREEDY, batch_size=batch_size)
    alone = [
        generate(model, tokenizer, [p], [lam], GREEDY)[0]
        for p, lam in zip(PROMPTS, LAMBDAS, strict=True)
    ]
    assert batched == alone
    assert all(text for text in batched)


def test_per_row_tokens_equal_each_prompt_alone(model, tokenizer):
    ids, mask = left_pad(tokenizer, PROMPTS)
    params = [GREEDY] * len(PROMPTS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    with preference(model, LAMBDAS):
        batched = decoded(model, ids, mask, params, {eos}, pad)
    for row, lam in enumerate(LAMBDAS):
        one_ids, one_mask = left_pad(tokenizer, [PROMPTS[row]])
        assert one_mask.all()
        with preference(model, lam):
            assert decoded(model, one_ids, one_mask, [GREEDY], {eos}, pad)[0] == batched[row]


def test_cached_batched_decoding_equals_naive_decoding(model, tokenizer, naive_greedy):
    ids, mask = left_pad(tokenizer, PROMPTS)
    with preference(model, LAMBDAS):
        batched = decoded(model, ids, mask, [GREEDY] * 4, {-1}, tokenizer.pad_token_id)
    for row, lam in enumerate(LAMBDAS):
        with preference(model, lam):
            want = naive_greedy(model, encode_prompt(tokenizer, PROMPTS[row], 64), 10)
        assert batched[row] == want


def test_preference_changes_the_generated_text(model, tokenizer):
    """Makes the batch test meaningful: with this adapter λ really changes the answers."""
    for prompt in PROMPTS[:2]:
        texts = generate(model, tokenizer, [prompt] * 3, LAMBDAS[:3], GREEDY)
        assert len(set(texts)) >= 2


def test_generate_restores_the_previous_preference(model, tokenizer):
    generate(model, tokenizer, PROMPTS[:2], LAMBDAS[:2], GREEDY)
    assert all(layer.preference is None for _, layer in svd_lora_layers(model))


def test_no_preference_with_the_adapter_off_is_the_base_model(model, tokenizer, tiny_base_dir):
    base = load_model(str(tiny_base_dir)).eval()
    with adapter_disabled(model):
        off = generate(model, tokenizer, PROMPTS, None, GREEDY)
    assert off == generate(base, tokenizer, PROMPTS, None, GREEDY)
    with pytest.raises(MoaError, match="set_preference"):
        generate(model, tokenizer, PROMPTS, None, GREEDY)


# --- stopping: EOS and max_new_tokens, per row -----------------------------------------------


def free_run(model, tokenizer, max_new_tokens: int = 10) -> list[list[int]]:
    """Tokens generated with an EOS id that never occurs: every row runs to its limit."""
    ids, mask = left_pad(tokenizer, PROMPTS)
    params = [SamplingParams(max_new_tokens=max_new_tokens)] * len(PROMPTS)
    with preference(model, LAMBDAS):
        return decoded(model, ids, mask, params, {-1}, tokenizer.pad_token_id)


def test_each_row_stops_at_its_first_eos(model, tokenizer):
    free = free_run(model, tokenizer)
    assert all(len(row) == 10 for row in free)
    # use as "EOS" a token that row 0 writes first at step i ≥ 2
    step = next(i for i in range(2, 10) if free[0][i] not in free[0][:i])
    eos = free[0][step]
    ids, mask = left_pad(tokenizer, PROMPTS)
    with preference(model, LAMBDAS):
        out = decoded(model, ids, mask, [GREEDY] * 4, {eos}, tokenizer.pad_token_id)
    assert out[0] == free[0][:step]
    for row in range(4):
        want = free[row][: free[row].index(eos)] if eos in free[row] else free[row]
        assert out[row] == want
        assert eos not in out[row]
    assert max(len(row) for row in out) > step  # other rows went on after row 0 stopped


def test_each_row_stops_at_its_own_max_new_tokens(model, tokenizer):
    free = free_run(model, tokenizer)
    ids, mask = left_pad(tokenizer, PROMPTS)
    limits = [3, 7, 1, 10]
    params = [SamplingParams(max_new_tokens=n) for n in limits]
    with preference(model, LAMBDAS):
        out = decoded(model, ids, mask, params, {-1}, tokenizer.pad_token_id)
    assert [len(row) for row in out] == limits
    assert all(out[r] == free[r][: limits[r]] for r in range(4))


def test_each_step_says_how_its_rows_finished_and_finished_rows_go_quiet(model, tokenizer):
    free = free_run(model, tokenizer)
    step = next(i for i in range(2, 8) if free[0][i] not in free[0][:i])
    eos = free[0][step]
    if eos in free[1][:3]:
        pytest.skip("row 1 writes the stand-in EOS early")
    decoder = ContinuousDecoder(model, tokenizer.pad_token_id, {eos}, max_num_seqs=2)
    for row, limit in ((0, 10), (1, 3)):
        ids = encode_prompt(tokenizer, PROMPTS[row], 64)
        decoder.add(row, ids, LAMBDAS[row], SamplingParams(max_new_tokens=limit))
    steps = []
    while decoder.has_work():
        steps.append(dict(decoder.step()))
    row0 = [s[0] for s in steps if 0 in s]
    assert [p.token for p in row0[:step]] == free[0][:step]
    assert row0[step] == Piece(None, "stop")  # the stop token itself is not text
    assert len(row0) == step + 1
    row1 = [s[1] for s in steps if 1 in s]
    assert [p.token for p in row1] == free[1][:3]
    assert [p.finish for p in row1] == [None, None, "length"]
    assert len(steps) == max(step + 1, 3)  # decoding ends when every row has


# --- sampling --------------------------------------------------------------------------------

SEEDS = [11, 22, 33, 44]


def sampled(seed: int, top_p: float = 0.9, temperature: float = 1.0) -> SamplingParams:
    return SamplingParams(max_new_tokens=10, temperature=temperature, top_p=top_p, seed=seed)


def test_seeded_sampling_is_reproducible_and_the_same_in_a_batch_as_alone(model, tokenizer):
    params = [sampled(seed) for seed in SEEDS]
    batched = generate(model, tokenizer, PROMPTS, LAMBDAS, params)
    assert generate(model, tokenizer, PROMPTS, LAMBDAS, params) == batched
    for row in range(4):
        alone = generate(model, tokenizer, [PROMPTS[row]], [LAMBDAS[row]], [params[row]])
        assert alone == [batched[row]]
    # meaningful: this is not greedy decoding, and the seed matters
    assert batched != generate(model, tokenizer, PROMPTS, LAMBDAS, GREEDY)
    same_prompt = generate(model, tokenizer, [PROMPTS[1]] * 4, [LAMBDAS[0]] * 4, params)
    assert len(set(same_prompt)) >= 2


def test_a_tiny_top_p_is_greedy_and_temperature_zero_ignores_the_seed(model, tokenizer):
    greedy = generate(model, tokenizer, PROMPTS, LAMBDAS, GREEDY)
    nucleus_of_one = [sampled(seed, top_p=1e-6) for seed in SEEDS]
    assert generate(model, tokenizer, PROMPTS, LAMBDAS, nucleus_of_one) == greedy
    seeded_greedy = [SamplingParams(max_new_tokens=10, seed=seed) for seed in SEEDS]
    assert generate(model, tokenizer, PROMPTS, LAMBDAS, seeded_greedy) == greedy


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (1.0, 1.0, [0.5, 0.3, 0.15, 0.05]),
        (1.0, 0.7, [0.625, 0.375, 0.0, 0.0]),  # nucleus {0, 1}: cumsum before each < 0.7
        (1.0, 0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (0.5, 1.0, [0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365]),
    ],
)
def test_sampling_follows_temperature_and_top_p(temperature, top_p, expected):
    """2000 draws of one row at steps 0..1999 from the same logits."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=7)
    tokens = next_tokens(probs.log().expand(2000, 4), [params] * 2000, range(2000))
    freq = torch.bincount(tokens, minlength=4).float() / 2000
    torch.testing.assert_close(freq, torch.tensor(expected), atol=0.045, rtol=0)
    assert all(freq[i] == 0 for i, p in enumerate(expected) if p == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be ≥ 1; got 0"),
        ({"temperature": -0.5}, r"temperature must be 0 \(greedy\) or in \[0.001, 100\]; got -0.5"),
        ({"temperature": 1e-39}, "temperature must be 0"),  # 1 / T overflows
        ({"temperature": 1e6}, "temperature must be 0"),
        ({"seed": 2**64}, r"seed must be in \[0, 2\^64 - 1\]; got 18446744073709551616"),
        ({"seed": -1}, "seed must be in"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]; got 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]; got 1.5"),
        ({"top_p": -0.1}, "top_p must be in"),
    ],
)
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(MoaError, match=message):
        SamplingParams(**kwargs)


def test_one_preference_serves_every_prompt(model, tokenizer):
    one = generate(model, tokenizer, PROMPTS[:3], [0.3, 0.7], GREEDY)
    assert one == generate(model, tokenizer, PROMPTS[:3], [[0.3, 0.7]] * 3, GREEDY)


def test_one_sampling_params_gives_each_row_its_own_seed(model, tokenizer):
    params = SamplingParams(max_new_tokens=12, temperature=1.5, seed=5)
    answers = generate(model, tokenizer, [PROMPTS[0]] * 6, [0.5, 0.5], params)
    assert len(set(answers)) > 1  # the same prompt and λ, six different samples
    alone = generate(model, tokenizer, [PROMPTS[0]], [0.5, 0.5], replace(params, seed=7))
    assert alone[0] == answers[2]  # row i is sampled with seed + i


def test_sampling_params_edges_are_accepted():
    SamplingParams(max_new_tokens=1, temperature=0.0, top_p=1.0)
    SamplingParams(temperature=2.0, top_p=1e-9)


@pytest.mark.parametrize(
    ("preferences", "params", "message"),
    [
        ([[0.5, 0.5]] * 3, GREEDY, r"must have shape \[m\] or \[2, m\]; got \[3, 2\]"),
        ([[0.5, 0.5]] * 2, [GREEDY] * 3, "got 3 sampling params for 2 prompts"),
        ([[0.5, 0.5], [-1.0, 2.0]], GREEDY, "non-negative"),
        ([[0.5, 0.5], [0.5, 0.6]], GREEDY, "sum to 1"),
        ([[[0.5, 0.5]], [[0.5, 0.5]]], GREEDY, r"shape \[2\] or \[batch, 2\]"),
    ],
    ids=["row-count", "params-count", "negative", "sum", "3-d"],
)
def test_generate_argument_errors(model, tokenizer, preferences, params, message):
    with pytest.raises(MoaError, match=message):
        generate(model, tokenizer, PROMPTS[:2], preferences, params)


@pytest.mark.parametrize(
    "preferences",
    [[[0.5, 0.5], [0.2, 0.3, 0.5]], [["a", "b"], ["c", "d"]], [[None, None], [0.5, 0.5]]],
    ids=["ragged", "strings", "none"],
)
def test_generate_rejects_malformed_preferences_with_moa_error(model, tokenizer, preferences):
    with pytest.raises(MoaError, match="preference"):
        generate(model, tokenizer, PROMPTS[:2], preferences, GREEDY)


# --- train / eval mode -----------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_generate_runs_in_eval_mode_and_restores_the_mode(model, tokenizer, training):
    model.train(training)
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    try:
        generate(model, tokenizer, PROMPTS[:2], LAMBDAS[:2], GREEDY)
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert all(m.training is training for m in model.modules())


def test_mode_is_restored_when_generation_fails(model, tokenizer):
    model.train()
    with pytest.raises(MoaError, match="non-negative"):
        generate(model, tokenizer, PROMPTS[:2], [[1.0, 0.0], [-1.0, 2.0]], GREEDY)
    assert all(m.training for m in model.modules())
