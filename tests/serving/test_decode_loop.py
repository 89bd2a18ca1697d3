"""The server's decode loop without a server: requests that arrive while others decode join them
and each gets its own tokens, a failed step fails only the requests it was decoding, a client
that leaves frees its row, and drained() holds newcomers back until the admitted ones are done."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.data.encoding import encode_prompt
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import inject_svd_lora
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


def test_a_failed_step_fails_its_requests_and_the_waiting_one_goes_on(
    make_loop, tokenizer, monkeypatch
):
    calls = {"n": 0}
    original = ContinuousDecoder.step

    def failing_once(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a step went wrong")
        return original(self)

    monkeypatch.setattr(ContinuousDecoder, "step", failing_once)

    async def scenario():
        loop = make_loop(1)  # one slot: the second request waits while the first decodes
        tasks = [asyncio.create_task(tokens_of(loop, job(tokenizer, i, 16))) for i in (0, 1)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, second = asyncio.run(scenario())
    assert isinstance(first, DecodeFailed) and "a step went wrong" in str(first)
    monkeypatch.setattr(ContinuousDecoder, "step", original)
    assert second == alone(make_loop, tokenizer, 1, 16)


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
