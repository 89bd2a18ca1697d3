"""The continuous decoder: rows that join a running batch midway, leave it early, share it at
different λ, or outlive a move of the cache give the tokens they give alone: greedy, those of
decoding without a cache (the whole sequence again at every step); sampled, those of a decoder
that holds the row alone."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from orchestrator.data.encoding import encode_prompt
from orchestrator.errors import MoaError
from orchestrator.model import decoder as decoder_module
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import preference

PROMPTS = [
    "Hi",
    "How do I start a campfire safely in the woods at night?",
    "What are the steps to grow tomatoes?",
    "Tell me a joke.",
    "Why is the sky blue?",
    "Give me three tips for sleeping better, please.",
]
LAMBDAS = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]]
LENGTHS = [3, 12, 7, 1, 9, 5]  # max_new_tokens per row: rows end at different steps


def prompt_ids(tokenizer, prompt):
    return encode_prompt(tokenizer, prompt, 32)


def decode_all(decoder, requests, on_step=None) -> dict:
    """{key: tokens} of `requests` [(key, prompt ids, λ, params)] added up front."""
    for request in requests:
        decoder.add(*request)
    tokens: dict = {key: [] for key, *_ in requests}
    finishes: dict = {}
    while decoder.has_work():
        for key, piece in decoder.step():
            assert key not in finishes, f"{key} drew after it finished"
            if piece.token is not None:
                tokens[key].append(piece.token)
            if piece.finish is not None:
                finishes[key] = piece.finish
        if on_step is not None:
            on_step(decoder)
    assert finishes.keys() == tokens.keys()
    return tokens


def new_decoder(model, tokenizer, slots, **sizes):
    options = {"max_prompt_tokens": 32, "max_new_tokens": 16, **sizes}
    stops = {tokenizer.eos_token_id}
    return ContinuousDecoder(model, tokenizer.pad_token_id, stops, max_num_seqs=slots, **options)


def requests(tokenizer, params):
    return [
        (i, prompt_ids(tokenizer, p), lam, prm)
        for i, (p, lam, prm) in enumerate(zip(PROMPTS, LAMBDAS, params, strict=True))
    ]


def alone(model, tokenizer, prompt, lam, params, naive_greedy) -> list[int]:
    """The row by itself: without a cache when greedy, else in a decoder of one slot."""
    ids = prompt_ids(tokenizer, prompt)
    if params.temperature == 0:
        with preference(model, torch.tensor([lam])):
            return naive_greedy(model, ids, params.max_new_tokens, {tokenizer.eos_token_id})
    return decode_all(new_decoder(model, tokenizer, 1), [(0, ids, lam, params)])[0]


@pytest.mark.parametrize("slots", [2, 3, 6])
def test_rows_that_join_midway_give_the_tokens_they_give_alone(
    model, tokenizer, slots, naive_greedy
):
    params = [SamplingParams(max_new_tokens=n) for n in LENGTHS]
    running = []
    tokens = decode_all(
        new_decoder(model, tokenizer, slots),
        requests(tokenizer, params),
        on_step=lambda d: running.append(d.running),
    )
    expected = [
        alone(model, tokenizer, *row, naive_greedy)
        for row in zip(PROMPTS, LAMBDAS, params, strict=True)
    ]
    assert [tokens[i] for i in range(len(PROMPTS))] == expected
    assert [len(t) for t in expected] == LENGTHS  # no row stopped early: each ran its length
    if slots < len(PROMPTS):
        assert max(running) == slots  # the slots were kept full while requests waited


def test_seeded_samples_do_not_depend_on_slot_or_batchmates(model, tokenizer, naive_greedy):
    params = [
        SamplingParams(max_new_tokens=n, temperature=1.0, top_p=0.9, seed=100 + i)
        for i, n in enumerate(LENGTHS)
    ]
    together = decode_all(new_decoder(model, tokenizer, 6), requests(tokenizer, params))
    reordered = decode_all(new_decoder(model, tokenizer, 2), requests(tokenizer, params)[::-1])
    assert together == reordered
    for i, row in enumerate(zip(PROMPTS, LAMBDAS, params, strict=True)):
        assert together[i] == alone(model, tokenizer, *row, naive_greedy)
    reseeded = [SamplingParams(max_new_tokens=12, temperature=1.0, seed=s) for s in (1, 2)]
    a, b = (
        decode_all(new_decoder(model, tokenizer, 1), [(0, prompt_ids(tokenizer, PROMPTS[1]),
                                                        LAMBDAS[1], p)])[0]
        for p in reseeded
    )  # fmt: skip
    assert a != b  # the seed matters


def test_rows_outlive_moves_of_the_cache(model, tokenizer, monkeypatch, naive_greedy):
    """With 2 × (8 + 12) columns and 18 staggered requests through 2 slots the columns run out;
    every row, those moved and those that join after the move, still gives its tokens alone."""
    moves = []
    original = decoder_module.ContinuousDecoder._move_left

    def counted(self):
        moves.append(self.column)
        original(self)

    monkeypatch.setattr(decoder_module.ContinuousDecoder, "_move_left", counted)
    short = [encode_prompt(tokenizer, p, 8) for p in PROMPTS * 3]
    params = [SamplingParams(max_new_tokens=n) for n in (12, 7, 10, 4, 11, 6) * 3]
    decoder = ContinuousDecoder(
        model, tokenizer.pad_token_id, {-1}, max_num_seqs=2, max_prompt_tokens=8, max_new_tokens=12
    )
    lams = LAMBDAS * 3
    rows = [(i, ids, lams[i], params[i]) for i, ids in enumerate(short)]
    tokens = decode_all(decoder, rows)
    assert moves == [40]  # once, and later the batch ran empty: the columns started over
    for i, ids in enumerate(short):
        with preference(model, torch.tensor([lams[i]])):
            assert tokens[i] == naive_greedy(model, ids, params[i].max_new_tokens)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_row_that_goes_on_from_its_drawn_tokens_in_another_decoder_gives_the_rest(
    model, tokenizer, temperature
):
    """Rows drawn part way in one decoder, then added with those tokens to another that is
    running others (its shared column behind their width, so it moves right), give the tokens
    they give in one go, greedy and seeded."""
    params = [SamplingParams(12, temperature, 0.9, seed=7 + i) for i in range(3)]
    rows = [
        (i, prompt_ids(tokenizer, PROMPTS[i + 1])[:14], LAMBDAS[i], params[i]) for i in range(3)
    ]
    whole = decode_all(new_decoder(model, tokenizer, 3, max_prompt_tokens=16), rows)
    first = new_decoder(model, tokenizer, 3, max_prompt_tokens=16)
    for row in rows:
        first.add(*row)
    drawn = {key: [] for key, *_ in rows}
    for _ in range(9):
        for key, piece in first.step():
            drawn[key].append(piece.token)
    assert all(len(tokens) == 9 and None not in tokens for tokens in drawn.values())
    second = new_decoder(model, tokenizer, 3, max_prompt_tokens=16)
    second.add("other", prompt_ids(tokenizer, PROMPTS[0]), LAMBDAS[4], SamplingParams(6))
    second.step()
    for row in rows:
        second.add(*row, drawn[row[0]])
    columns = []
    while second.has_work():
        columns.append(second.column)
        for key, piece in second.step():
            if key in drawn and piece.token is not None:
                drawn[key].append(piece.token)
    assert drawn == whole
    assert columns[:2] == [17, 24]  # 14 + 9 tokens moved the column on past the prompts' 16


def test_a_cancelled_row_frees_its_slot_for_the_next_request(model, tokenizer):
    decoder = new_decoder(model, tokenizer, 1)
    params = SamplingParams(max_new_tokens=16)
    decoder.add("first", prompt_ids(tokenizer, PROMPTS[0]), LAMBDAS[0], params)
    decoder.add("second", prompt_ids(tokenizer, PROMPTS[1]), LAMBDAS[1], params)
    assert [key for key, _ in decoder.step()] == ["first"]
    decoder.cancel("first")
    assert decoder.running == 0
    seen = set()
    while decoder.has_work():
        seen |= {key for key, _ in decoder.step()}
    assert seen == {"second"}


def test_eager_attention_gives_the_same_tokens(model, tokenizer):
    params = [SamplingParams(max_new_tokens=n) for n in LENGTHS]
    sdpa = decode_all(new_decoder(model, tokenizer, 3), requests(tokenizer, params))
    model.set_attn_implementation("eager")
    eager = decode_all(new_decoder(model, tokenizer, 3), requests(tokenizer, params))
    assert eager == sdpa


def test_another_architecture_with_grouped_kv_heads_decodes_as_alone(naive_greedy):
    """Qwen2 (the jobs' model family), 4 query heads over 2 KV heads, without an adapter."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    qwen = Qwen2ForCausalLM(config).eval()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [16, 17, 18, 19]]
    params = [SamplingParams(max_new_tokens=n) for n in (6, 3, 8, 5)]
    decoder = ContinuousDecoder(qwen, 0, {1}, max_num_seqs=2, max_new_tokens=8)
    tokens = decode_all(
        decoder, [(i, p, None, prm) for i, (p, prm) in enumerate(zip(prompts, params, strict=True))]
    )
    for i, (p, prm) in enumerate(zip(prompts, params, strict=True)):
        assert tokens[i] == naive_greedy(qwen, p, prm.max_new_tokens, {1})


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ([], SamplingParams(), "a prompt must have 1 to 32 tokens; got 0"),
        (list(range(3, 36)), SamplingParams(), "a prompt must have 1 to 32 tokens; got 33"),
        ([5], SamplingParams(max_new_tokens=17), "max_new_tokens 17 is above this decoder's 16"),
        ([5, 99999], SamplingParams(), r"token ids must be in \[0, \d+\); got 99999"),
        ([5, -1], SamplingParams(), r"token ids must be in \[0, \d+\); got -1"),
    ],
)
def test_requests_beyond_the_decoders_bounds_are_refused(model, tokenizer, prompt, params, message):
    with pytest.raises(MoaError, match=message):
        new_decoder(model, tokenizer, 2).add(0, prompt, LAMBDAS[0], params)


def test_an_answer_to_go_on_from_must_leave_a_token_to_draw(model, tokenizer):
    with pytest.raises(MoaError, match="an answer to go on from has 4 tokens; max_new_tokens is 4"):
        new_decoder(model, tokenizer, 2).add(0, [5], LAMBDAS[0], SamplingParams(4), [6] * 4)
