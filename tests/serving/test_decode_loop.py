"""The server's decode loop without a server: requests that arrive while others decode join them
and each gets its own tokens, a poisoned request fails alone, a client
that leaves frees its row, and drained() holds newcomers back until the admitted ones are done."""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.data.encoding import encode_prompt
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import inject_svd_lora
from orchestrator.serving import decode_loop
from orchestrator.serving.decode_loop import DecodeFailed, DecodeJob, DecodeLoop, WaitedTooLong

PROMPTS = ["Hi", "How do I start a campfire?", "Tell me a joke.", "Why is the sky blue?"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tiny_base_dir, perturb):
    steerable = inject_svd_lora(load_model(str(tiny_base_dir)), 2, rank=4, alpha=8.0)
    perturb(steerable)
    return steerable.eval()


@pytest.fixture
def make_loop(model, tokenizer):
    executor = ThreadPoolExecutor(max_workers=1)

    def make(slots: int = 2, queue_timeout_s: float = 60.0) -> DecodeLoop:
        def new_decoder():
            return ContinuousDecoder(
                model, tokenizer.pad_token_id, {tokenizer.eos_token_id}, max_num_seqs=slots
            )

        return DecodeLoop(new_decoder, lambda: "v1", executor, queue_timeout_s)

    yield make
    executor.shutdown()


def job(tokenizer, i: int, max_tokens: int = 8) -> DecodeJob:
    ids = encode_prompt(tokenizer, PROMPTS[i], 64)
    return DecodeJob(ids, [i / 3, 1 - i / 3], SamplingParams(max_new_tokens=max_tokens))


async def tokens_of(loop: DecodeLoop, decode_job: DecodeJob) -> list[int]:
    return [piece.token async for piece, _ in loop.pieces(decode_job) if piece.token is not None]


def alone(make_loop, tokenizer, i: int, max_tokens: int = 8) -> list[int]:
    return asyncio.run(tokens_of(make_loop(1), job(tokenizer, i, max_tokens)))


def test_requests_that_arrive_while_others_decode_join_them(make_loop, tokenizer):
    async def scenario():
        loop = make_loop(2)
        first = asyncio.create_task(tokens_of(loop, job(tokenizer, 0)))
        await asyncio.sleep(0.05)  # the first is decoding when the others arrive
        rest = [asyncio.create_task(tokens_of(loop, job(tokenizer, i))) for i in (1, 2, 3)]
        return await asyncio.gather(first, *rest), loop

    answers, loop = asyncio.run(scenario())
    assert answers == [alone(make_loop, tokenizer, i) for i in range(4)]
    assert loop.admitted == 4 and loop.largest == 2
    assert loop.rows == sum(len(a) for a in answers) + sum(len(a) < 8 for a in answers)


POISON = 2  # a token id that none of the healthy rows reads or writes


@pytest.fixture
def poisoned(model, monkeypatch):
    """The model's forward raises for a batch that holds POISON."""
    forward = model.forward

    @functools.wraps(forward)
    def guarded(*args, input_ids, **kwargs):
        if (input_ids == POISON).any():
            raise RuntimeError("a poisoned row")
        return forward(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", guarded)


def sampled(tokenizer, i: int, max_tokens: int = 16) -> DecodeJob:
    ids = encode_prompt(tokenizer, PROMPTS[i], 64)
    return DecodeJob(ids, [0.5, 0.5], SamplingParams(max_tokens, temperature=1.0, seed=11 + i))


@pytest.mark.usefixtures("poisoned")
def test_a_poisoned_request_fails_alone_and_its_batchmates_go_on_as_alone(
    make_loop, tokenizer, monkeypatch
):
    """A request that joins the running rows and makes the step raise fails by itself; the rows
    it interrupted (greedy and seeded) go on from their tokens, the one waiting for a slot
    starts afterwards, and each gives what it gives alone."""
    healthy = [job(tokenizer, 1, 64), sampled(tokenizer, 2, 64), job(tokenizer, 3, 16)]
    poison = DecodeJob([*healthy[0].prompt_ids, POISON], [1.0, 0.0], SamplingParams(8))
    trials = []
    step_alone = decode_loop._step_alone

    def recorded(decoder, request):
        trials.append((request[0], len(request[4])))  # (key, tokens drawn before the trial)
        return step_alone(decoder, request)

    monkeypatch.setattr(decode_loop, "_step_alone", recorded)

    async def scenario():
        loop = make_loop(3)  # the third healthy request waits for a slot
        tasks = [asyncio.create_task(tokens_of(loop, healthy[i])) for i in (0, 1)]
        while loop.steps < 3:  # they are decoding when the poison and the third arrive
            await asyncio.sleep(0.001)
        tasks += [asyncio.create_task(tokens_of(loop, j)) for j in (poison, healthy[2])]
        return await asyncio.gather(*tasks, return_exceptions=True), loop

    (first, second, bad, third), loop = asyncio.run(scenario())
    assert isinstance(bad, DecodeFailed) and "a poisoned row" in str(bad)
    by_itself = [asyncio.run(tokens_of(make_loop(1), j)) for j in healthy]
    assert [first, second, third] == by_itself
    assert all(POISON not in tokens for tokens in by_itself)
    assert [key for key, _ in trials] == [0, 1, 2]  # the step's rows, not the one waiting
    assert trials[0][1] > 0 and trials[1][1] > 0 and trials[2][1] == 0  # went on midway
    assert loop.decoder.running == 0 and not loop.jobs and not loop.answers


def test_a_fault_that_needs_batchmates_fails_its_rows_at_the_second_step_it_breaks(
    make_loop, tokenizer, model, monkeypatch
):
    forward = model.forward

    @functools.wraps(forward)
    def crowded(*args, input_ids, **kwargs):
        if input_ids.shape[0] > 1:
            raise RuntimeError("too many rows")
        return forward(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", crowded)

    async def scenario():
        loop = make_loop(2)
        tasks = [asyncio.create_task(tokens_of(loop, job(tokenizer, i, 16))) for i in (0, 1)]
        return await asyncio.gather(*tasks, return_exceptions=True), loop

    answers, loop = asyncio.run(scenario())
    assert all(isinstance(a, DecodeFailed) and "too many rows" in str(a) for a in answers)
    assert not loop.decoder.has_work() and not loop.queues


def test_a_client_that_leaves_frees_its_row_at_the_next_step(make_loop, tokenizer):
    async def scenario():
        loop = make_loop(1)
        stream = loop.pieces(job(tokenizer, 1, 16))
        await stream.__anext__()
        await stream.aclose()  # the client went away after one token
        later = await tokens_of(loop, job(tokenizer, 2))
        return loop, later

    loop, later = asyncio.run(scenario())
    assert later == alone(make_loop, tokenizer, 2)
    assert loop.decoder.running == 0 and loop.rows < 16 + len(later) + 1


def test_drained_waits_for_the_admitted_and_holds_newcomers_back(make_loop, tokenizer):
    async def scenario():
        loop = make_loop(2)
        running = asyncio.create_task(tokens_of(loop, job(tokenizer, 0, 16)))
        await asyncio.sleep(0.05)
        async with loop.drained():
            assert running.done()  # the admitted request finished first
            newcomer = asyncio.create_task(tokens_of(loop, job(tokenizer, 3)))
            await asyncio.sleep(0.05)
            assert loop.decoder.running == 0 and not newcomer.done()  # held back
        return await running, await newcomer

    first, newcomer = asyncio.run(scenario())
    assert first == alone(make_loop, tokenizer, 0, 16)
    assert newcomer == alone(make_loop, tokenizer, 3)


def test_a_request_that_waits_past_the_queue_timeout_fails_alone(make_loop, tokenizer):
    async def scenario():
        loop = make_loop(1, queue_timeout_s=1e-9)  # one slot: the second waits for the first
        tasks = [asyncio.create_task(tokens_of(loop, job(tokenizer, i, 64))) for i in (1, 2)]
        return await asyncio.gather(*tasks, return_exceptions=True), loop

    (first, second), loop = asyncio.run(scenario())
    assert first == alone(make_loop, tokenizer, 1, 64)
    assert isinstance(second, WaitedTooLong) and "1e-09 s" in str(second)
    assert loop.rows == len(first) + (len(first) < 64)  # the second never drew a token
    assert loop.decoder.running == 0 and not loop.decoder.waiting
