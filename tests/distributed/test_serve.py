"""The steerable model over real HTTP on 127.0.0.1: answers equal offline generation at each λ,
requests at different λ share batches, client mistakes get a 4xx naming the field, and a new
adapter is loaded in place while requests are in flight."""

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import ray
from ray import serve

from orchestrator.data.encoding import encode_prompt
from orchestrator.distributed.serve import deploy
from orchestrator.model.adapter_io import adapter_version, load_adapter, save_adapter
from orchestrator.model.generate import generate
from orchestrator.model.loading import load_model
from orchestrator.model.sampling import SamplingParams
from orchestrator.model.svd_lora import inject_svd_lora
from orchestrator.recipes.serve import served_model

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

PROMPTS = [
    "How do I sharpen a kitchen knife?",
    "How can I start a campfire?",
    "What is a good way to learn to swim?",
]
LAMBDAS = [(1.0, 0.0), (0.7, 0.3), (0.5, 0.5), (0.2, 0.8), (0.0, 1.0)]
MAX_TOKENS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adapter(tiny_base_dir, perturb, directory, seed: int, trained_at=None):
    """A saved adapter large enough that λ changes the answers."""
    model = inject_svd_lora(
        load_model(str(tiny_base_dir)),
        2,
        4,
        32,
        objective_names=("helpful", "harmless"),
        seed=0,
        trained_at=trained_at,
    )
    perturb(model, seed=seed, std=0.05, scale=3.0)
    save_adapter(model, directory)
    return directory


@pytest.fixture(scope="module")
def adapters(tiny_base_dir, perturb, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-adapters")
    return [
        _adapter(tiny_base_dir, perturb, root / name, seed) for name, seed in (("a", 1), ("b", 2))
    ]


@pytest.fixture(scope="module")
def settings():
    return [
        f"serve.port={_free_port()}",
        f"serve.default_max_tokens={MAX_TOKENS}",
        "serve.max_tokens=64",
        "serve.max_prompt_tokens=48",
    ]


@pytest.fixture(scope="module")
def server(adapters, settings):
    url = deploy(served_model(str(adapters[0]), settings))
    yield url
    serve.shutdown()


def offline(tiny_base_dir, tokenizer, adapter, prompts, lambdas, max_tokens=MAX_TOKENS):
    model = load_adapter(load_model(str(tiny_base_dir)), adapter)
    return generate(model, tokenizer, prompts, lambdas, SamplingParams(max_new_tokens=max_tokens))


def post(url: str, body, raw: bytes | None = None) -> tuple[int, dict | str]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as err:
        text, status = err.read().decode(), err.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def complete(server, prompt, lam, **extra):
    body = {"prompt": prompt, "preference": list(lam), "temperature": 0, **extra}
    status, answer = post(f"{server}/v1/completions", body)
    assert status == 200, answer
    return answer


def test_completions_and_chat_equal_offline_greedy_generation_at_each_lambda(
    server, adapters, tiny_base_dir, tokenizer
):
    prompts = [p for p in PROMPTS for _ in LAMBDAS]
    lambdas = [lam for _ in PROMPTS for lam in LAMBDAS]
    want = offline(tiny_base_dir, tokenizer, adapters[0], prompts, lambdas)
    assert len(set(want[: len(LAMBDAS)])) > 2  # λ changes the answer
    for prompt, lam, text in zip(prompts, lambdas, want, strict=True):
        answer = complete(server, prompt, lam)
        assert answer["choices"][0]["text"] == text
        assert answer["preference"] == {"helpful": lam[0], "harmless": lam[1]}
        assert answer["adapter_version"] == adapter_version(adapters[0])
        chat = {
            "messages": [{"role": "user", "content": prompt}],
            "model": f"moa:{lam[0]},{lam[1]}",
            "temperature": 0,
        }
        status, answer = post(f"{server}/v1/chat/completions", chat)
        assert status == 200, answer
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": text}
        assert answer["usage"]["prompt_tokens"] == len(encode_prompt(tokenizer, prompt, 48))


def test_a_preference_map_and_the_default_preference(server, adapters, tiny_base_dir, tokenizer):
    want = offline(tiny_base_dir, tokenizer, adapters[0], PROMPTS[:1] * 2, [(0.0, 1.0), (0.5, 0.5)])
    as_map = {"prompt": PROMPTS[0], "preference": {"harmless": 1}, "temperature": 0}
    assert post(f"{server}/v1/completions", as_map)[1]["choices"][0]["text"] == want[0]
    default = {"prompt": PROMPTS[0], "temperature": 0}
    assert post(f"{server}/v1/completions", default)[1]["choices"][0]["text"] == want[1]
    unnormalised = {"prompt": PROMPTS[0], "preference": [3, 3], "normalize": True, "temperature": 0}
    assert post(f"{server}/v1/completions", unnormalised)[1]["choices"][0]["text"] == want[1]


def test_32_concurrent_requests_at_32_lambdas_are_batched_and_each_equals_its_offline_answer(
    server, adapters, tiny_base_dir, tokenizer
):
    lambdas = [(i / 31, 1 - i / 31) for i in range(32)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    want = offline(tiny_base_dir, tokenizer, adapters[0], prompts, lambdas)
    before = get(f"{server}/v1/stats")
    with ThreadPoolExecutor(32) as threads:
        answers = list(
            threads.map(lambda args: complete(server, *args), zip(prompts, lambdas, strict=True))
        )
    assert [a["choices"][0]["text"] for a in answers] == want
    after = get(f"{server}/v1/stats")
    assert after["requests"] - before["requests"] == 32
    rows, steps = after["rows"] - before["rows"], after["steps"] - before["steps"]
    assert rows == sum(
        a["usage"]["completion_tokens"] + (a["choices"][0]["finish_reason"] == "stop")
        for a in answers
    )
    assert rows / steps > 4  # the 32 requests decoded together, not one after another
    assert after["running"] == 0


def test_a_streamed_chat_adds_up_to_the_whole_answer(server, adapters, tiny_base_dir, tokenizer):
    [want] = offline(tiny_base_dir, tokenizer, adapters[0], PROMPTS[1:2], [(0.2, 0.8)])
    body = {
        "messages": [{"role": "user", "content": PROMPTS[1]}],
        "preference": [0.2, 0.8],
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, text = post(f"{server}/v1/chat/completions", body)
    assert status == 200
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == want
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_the_openai_client_steers_with_extra_body_or_the_model_name(
    server, adapters, tiny_base_dir, tokenizer
):
    want = offline(tiny_base_dir, tokenizer, adapters[0], PROMPTS[:2], [(0.7, 0.3), (0.0, 1.0)])
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model="moa",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        temperature=0,
        extra_body={"preference": {"helpful": 0.7, "harmless": 0.3}},
    )
    assert chat.choices[0].message.content == want[0]
    assert chat.model_extra["preference"] == {"helpful": 0.7, "harmless": 0.3}
    completion = client.completions.create(model="moa:0,1", prompt=PROMPTS[1], temperature=0)
    assert completion.choices[0].text == want[1]
    stream = client.chat.completions.create(
        model="moa:0.7,0.3",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want[0]
    assert [m.id for m in client.models.list()] == ["moa"]
    with pytest.raises(openai.BadRequestError, match="sum to 1"):
        client.completions.create(model="moa", prompt="hi", extra_body={"preference": [1, 1]})


def test_a_seeded_sample_is_the_same_whatever_batch_it_lands_in(server):
    body = {"prompt": PROMPTS[2], "preference": [0.5, 0.5], "temperature": 1.0, "seed": 7}
    with ThreadPoolExecutor(8) as threads:
        texts = list(threads.map(lambda _: post(f"{server}/v1/completions", body)[1], range(8)))
    assert len({t["choices"][0]["text"] for t in texts}) == 1


BAD_INPUTS = [
    # (route, body or raw bytes, status, param, words in the message)
    ("completions", {"prompt": "hi", "preference": [1.0]}, 400, "preference", "shape [2]"),
    ("completions", {"prompt": "hi", "preference": [0.5, 0.3, 0.2]}, 400, "preference", "[2]"),
    ("completions", {"prompt": "hi", "preference": [1.5, -0.5]}, 400, "preference", "non-negative"),
    ("completions", b'{"prompt": "hi", "preference": [NaN, 1]}', 400, "preference", "finite"),
    ("completions", b'{"prompt": "hi", "preference": [Infinity, 0]}', 400, "preference", "finite"),
    ("completions", {"prompt": "hi", "preference": [0, 0]}, 400, "preference", "all be zero"),
    ("completions", {"prompt": "hi", "preference": [0.6, 0.6]}, 400, "preference", "sum to 1"),
    ("completions", {"prompt": "hi", "preference": {"funny": 1}}, 400, "preference", "funny"),
    ("completions", {"prompt": "hi", "preference": "0.5,0.5"}, 400, "preference", "preference"),
    ("completions", {"prompt": "hi", "model": "moa:0.5,x"}, 400, "model", "numbers"),
    ("completions", {"prompt": "hi", "model": "moa:0.9,0.3"}, 400, "model", "sum to 1"),
    ("completions", {"prompt": "hi", "model": "gpt-4"}, 404, "model", "not served"),
    ("completions", {"prompt": "hi", "model": "moa:1,0", "preference": [1, 0]}, 400, "preference",
     "not both"),
    ("completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens", "between 1 and 64"),
    ("completions", {"prompt": "hi", "max_tokens": 65}, 400, "max_tokens", "between 1 and 64"),
    ("completions", {"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens", "max_tokens"),
    ("completions", {"prompt": ""}, 400, "prompt", "empty"),
    ("completions", {"prompt": "   "}, 400, "prompt", "empty"),
    ("completions", {"prompt": "word " * 200}, 400, "prompt", "at most 48"),
    ("completions", {}, 400, "prompt", "required"),
    ("completions", b'{"prompt": "hi",', 400, None, "not valid JSON"),
    ("completions", b"[1, 2]", 400, None, "JSON object"),
    ("completions", {"prompt": "hi", "temperature": -1}, 400, "temperature", "temperature"),
    ("completions", {"prompt": "hi", "top_p": 0}, 400, "top_p", "top_p"),
    ("completions", {"prompt": "hi", "n": 2}, 400, "n", "n must be 1"),
    ("completions", {"prompt": "hi", "stop": ["\n"]}, 400, "stop", "not supported"),
    ("completions", {"prompt": "hi", "logprobs": 3}, 400, "logprobs", "unknown field"),
    ("chat/completions", {"messages": []}, 400, "messages", "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": ""}]}, 400, "messages",
     "empty"),
    ("chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages",
     "messages"),
    ("chat/completions", {"messages": [{"role": "user"}]}, 400, "messages", "required"),
    ("chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1000}, 400,
     "max_completion_tokens", "between 1 and 64"),
    # what a probe found to get past validation and fail inside a shared decoding step
    ("completions", {"prompt": "hi", "seed": 2**64, "temperature": 1}, 400, "seed", "seed"),
    ("completions", {"prompt": "hi", "seed": -(2**63) - 1, "temperature": 1}, 400, "seed", "seed"),
    ("completions", {"prompt": "hi", "temperature": 1e-39}, 400, "temperature", "at least 0.001"),
    ("completions", b'{"prompt": "\\ud800 hi"}', 400, None, "lone surrogate"),
    ("completions", b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None, "nested"),
    ("completions", {"prompt": ["hi"] * 17}, 400, "prompt", "at most 16 prompts"),
    ("completions", {"prompt": "hi", "model": "moa:"}, 400, "model", "name the weights"),
    ("completions", {"prompt": "hi", "model": "x" * 100_000}, 404, "model", "100002 characters"),
    ("completions", {"prompt": "x" * 2_000_000}, 413, None, "over 1048576 bytes"),
    ("completions", {"prompt": "hi " * 100_000}, 400, "prompt", "over 48 tokens"),
]  # fmt: skip


def test_bad_inputs_get_a_4xx_naming_the_field_and_the_server_stays_healthy(server):
    for route, body, status, param, words in BAD_INPUTS:
        raw = body if isinstance(body, bytes) else None
        got, answer = post(f"{server}/v1/{route}", body, raw)
        assert got == status, (body, answer)
        error = answer["error"]
        assert error["param"] == param, (body, error)
        assert words in error["message"], (body, error)
    assert get(f"{server}/health")["status"] == "ok"
    assert complete(server, PROMPTS[0], (0.5, 0.5))["choices"][0]["finish_reason"] in (
        "stop",
        "length",
    )


def test_what_the_server_will_not_read_is_refused_in_its_error_shape(server):
    plain = urllib.request.Request(
        f"{server}/v1/completions", data=b'{"prompt": "hi"}', headers={"Content-Type": "text/plain"}
    )
    for request, status, words in (
        (plain, 415, "Content-Type: application/json"),
        (urllib.request.Request(f"{server}/v1/nothing"), 404, "GET /v1/nothing"),
        (urllib.request.Request(f"{server}/v1/completions"), 405, "GET /v1/completions"),
    ):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == status
        error = json.loads(err.value.read())["error"]
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        assert words in error["message"] and error["type"] == kind, error
    assert get(f"{server}/health")["status"] == "ok"


def test_requests_beyond_the_waiting_bound_get_429_with_retry_after(server, adapters, settings):
    busy = [*settings, "serve.max_batch_size=1", "serve.max_waiting_requests=1"]
    deploy(served_model(str(adapters[0]), busy))  # in place: one slot, one request may wait
    assert get(f"{server}/v1/stats")["max_batch_size"] == 1  # deploy returned once it applied

    def send(i: int) -> tuple[int, dict, str | None]:
        # An answer that runs its whole 64 tokens (no early stop): one request holds the slot
        # for 64 steps while the others arrive.
        body = {"prompt": PROMPTS[0], "preference": [1, 0], "temperature": 0, "max_tokens": 64}
        request = urllib.request.Request(
            f"{server}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.load(response), None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), err.headers.get("Retry-After")

    # 24 at once: on a busy machine the proxy can hand 8 over one by one, each after the last
    # answer (64 steps of the tiny model) is done, and then none is refused.
    try:
        with ThreadPoolExecutor(24) as threads:
            results = list(threads.map(send, range(24)))
    finally:
        deploy(served_model(str(adapters[0]), settings))
    refused = [r for r in results if r[0] == 429]
    assert refused and len(refused) <= 22, [r[0] for r in results]  # one decodes, one waits
    assert all(r[0] in (200, 429) for r in results)
    assert all(r[1]["usage"]["completion_tokens"] == 64 for r in results if r[0] == 200)
    assert all(r[2] == "1" and r[1]["error"]["type"] == "rate_limit_error" for r in refused)
    assert get(f"{server}/health")["status"] == "ok"


def test_requests_a_probe_found_poisonous_fail_alone_and_their_batchmates_finish(
    server, adapters, tiny_base_dir, tokenizer
):
    """Sent among good ones at once: what once passed validation and broke the shared step is
    refused by itself; a top_p of 1e-46 keeps only the likeliest token (greedy); the good ones
    give their offline answers."""
    refused = [
        {"prompt": PROMPTS[0], "seed": 2**64, "temperature": 1},
        {"prompt": PROMPTS[0], "seed": -(2**63) - 1, "temperature": 1},
        {"prompt": PROMPTS[0], "temperature": 1e-39},
    ]
    narrow = {"prompt": PROMPTS[1], "preference": [0.5, 0.5], "temperature": 1, "top_p": 1e-46}
    good = [
        {"prompt": PROMPTS[i % 3], "preference": list(LAMBDAS[i % 5]), "temperature": 0}
        for i in range(9)
    ]
    bodies = [*good[:3], *refused, *good[3:6], narrow, *good[6:]]
    with ThreadPoolExecutor(len(bodies)) as threads:
        results = list(threads.map(lambda b: post(f"{server}/v1/completions", b), bodies))
    answers = {id(body): result for body, result in zip(bodies, results, strict=True)}
    assert [answers[id(b)][0] for b in refused] == [400, 400, 400]
    assert [answers[id(b)][1]["error"]["param"] for b in refused] == ["seed", "seed", "temperature"]
    want = offline(
        tiny_base_dir,
        tokenizer,
        adapters[0],
        [b["prompt"] for b in [*good, narrow]],
        [b["preference"] for b in [*good, narrow]],
    )
    got = [answers[id(b)] for b in [*good, narrow]]
    assert [status for status, _ in got] == [200] * 10
    assert [answer["choices"][0]["text"] for _, answer in got] == want


def test_a_stream_that_gets_no_slot_in_time_ends_with_an_error_event(server, adapters, settings):
    tight = [*settings, "serve.max_batch_size=1", "serve.queue_timeout_s=0.000001"]
    deploy(served_model(str(adapters[0]), tight))  # in place: one slot, no waiting for it
    long = {"prompt": PROMPTS[0], "temperature": 0, "max_tokens": 64, "preference": [1, 0]}
    stream = {"messages": [{"role": "user", "content": PROMPTS[1]}], "stream": True}
    try:
        with ThreadPoolExecutor(1) as threads:
            running = threads.submit(post, f"{server}/v1/completions", long)
            deadline = time.monotonic() + 30
            while get(f"{server}/v1/stats")["running"] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            status, text = post(f"{server}/v1/chat/completions", stream)
            first = running.result()
    finally:
        deploy(served_model(str(adapters[0]), settings))
    assert first[0] == 200 and first[1]["usage"]["completion_tokens"] == 64  # it held the slot
    assert status == 200
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    [event, done] = events  # the error, no chunk, and the end
    assert done == "[DONE]"
    error = json.loads(event)["error"]
    assert error["type"] == "server_error"
    assert "no decoding slot came free within 1e-06 s" in error["message"]


def test_a_client_that_disconnects_frees_its_rows(server):
    host, port = server.removeprefix("http://").split(":")
    body = {"prompt": PROMPTS[:2] * 8, "temperature": 0, "max_tokens": 64, "stream": True}
    before = get(f"{server}/v1/stats")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200 and response.read(6) == b"data: "
    connection.close()  # gone after the first chunk of 16 answers
    deadline = time.monotonic() + 30
    while (after := get(f"{server}/v1/stats"))["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert after["running"] == 0
    assert after["rows"] - before["rows"] < 16 * 64 / 2  # the rows left long before their end


def test_clients_stuck_halfway_through_their_body_block_neither_health_nor_requests(
    server, adapters, settings
):
    quick = [*settings, "serve.body_timeout_s=2"]
    deploy(served_model(str(adapters[0]), quick))  # in place
    host, port = server.removeprefix("http://").split(":")
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"prompt": "'
    )
    stuck = []
    try:
        for _ in range(64):  # more than the replica's 32 decoding slots
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(head)
            stuck.append(sock)
        started = time.monotonic()
        assert get(f"{server}/health")["status"] == "ok"
        assert complete(server, PROMPTS[0], (0.5, 0.5))["choices"][0]["text"]
        assert time.monotonic() - started < 10
        replies = []  # each is answered in time
        for sock in stuck:
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            replies.append((reply.status, json.loads(reply.read())))
    finally:
        for sock in stuck:
            sock.close()
        deploy(served_model(str(adapters[0]), settings))
    assert {status for status, _ in replies} == {408}, replies[:2]
    assert all("did not arrive within 2 s" in body["error"]["message"] for _, body in replies)


def test_preferences_and_models_describe_what_is_served(server, adapters):
    info = get(f"{server}/v1/preferences")
    assert info["objectives"] == ["helpful", "harmless"]
    assert info["default_preference"] == {"helpful": 0.5, "harmless": 0.5}
    assert info["adapter_version"] == adapter_version(adapters[0])
    assert info["adapter"] == adapters[0].name  # not where it lies on the server's disk
    assert get(f"{server}/v1/models")["data"][0]["id"] == "moa"


def test_a_new_adapter_is_loaded_in_place_while_requests_are_in_flight(
    server, adapters, settings, tiny_base_dir, tokenizer
):
    """It leaves adapter b served."""
    old, new = (adapter_version(a) for a in adapters)
    lambdas = [(i / 15, 1 - i / 15) for i in range(16)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(16)]
    want = {
        version: offline(tiny_base_dir, tokenizer, adapter, prompts, lambdas, 64)
        for version, adapter in zip((old, new), adapters, strict=True)
    }
    before = get(f"{server}/v1/stats")
    with ThreadPoolExecutor(16) as threads:
        in_flight = [
            threads.submit(complete, server, p, lam, max_tokens=64)
            for p, lam in zip(prompts, lambdas, strict=True)
        ]
        deploy(served_model(str(adapters[1]), settings))  # returns once b answers
        answers = [future.result() for future in in_flight]  # raises if any failed
    for i, answer in enumerate(answers):
        assert answer["choices"][0]["text"] == want[answer["adapter_version"]][i]
    later = [
        complete(server, p, lam, max_tokens=64)
        for p, lam in zip(prompts[:4], lambdas[:4], strict=True)
    ]
    assert [a["adapter_version"] for a in later] == [new] * 4
    assert [a["choices"][0]["text"] for a in later] == want[new][:4]
    assert want[new][:4] != want[old][:4]
    after = get(f"{server}/v1/stats")
    assert after["replica"] == before["replica"]  # reconfigured, not restarted
    assert after["steps"] > before["steps"]
    assert get(f"{server}/v1/preferences")["adapter_version"] == new


def test_moa_serve_detach_reloads_the_running_app_in_place(
    server, adapters, settings, ray_session, tmp_path
):
    """After the in-place reload test: the CLI, against the same cluster, switches back to a."""
    env = {**ray_session.env, "RAY_ADDRESS": ray_session.gcs_address}
    replica = get(f"{server}/v1/stats")["replica"]
    moa = str(Path(sys.executable).with_name("moa"))
    done = subprocess.run(
        [moa, "serve", str(adapters[0]), "--detach", *settings],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"serving {adapters[0]} as model 'moa' at {server}/v1" in done.stdout
    assert get(f"{server}/v1/preferences")["adapter_version"] == adapter_version(adapters[0])
    assert get(f"{server}/v1/stats")["replica"] == replica


def test_deploying_again_with_another_port_names_the_running_servers_address(
    server, adapters, settings
):
    elsewhere = [
        *(o for o in settings if not o.startswith("serve.port=")),
        f"serve.port={_free_port()}",
    ]
    assert deploy(served_model(str(adapters[0]), elsewhere)) == server


def test_a_model_trained_at_one_preference_is_served_at_that_one_only(
    server, tiny_base_dir, perturb, settings, tokenizer, tmp_path
):
    """Last in this file: it leaves the fixed-λ adapter served."""
    fixed = _adapter(tiny_base_dir, perturb, tmp_path / "fixed", 3, trained_at=(0.7, 0.3))
    deploy(served_model(str(fixed), settings))
    info = get(f"{server}/v1/preferences")
    assert info["trained_at"] == info["default_preference"] == {"helpful": 0.7, "harmless": 0.3}
    assert info["accepts"]["preference"].startswith("only {'helpful': 0.7, 'harmless': 0.3}")
    got, answer = post(f"{server}/v1/completions", {"prompt": PROMPTS[0], "preference": [0.2, 0.8]})
    assert got == 400 and answer["error"]["param"] == "preference"
    assert (
        "trained at one preference, {'helpful': 0.7, 'harmless': 0.3}" in answer["error"]["message"]
    )
    status, by_default = post(f"{server}/v1/completions", {"prompt": PROMPTS[0], "temperature": 0})
    assert status == 200 and by_default["preference"] == {"helpful": 0.7, "harmless": 0.3}
    want = offline(tiny_base_dir, tokenizer, fixed, PROMPTS[:1], [(0.7, 0.3)])
    assert by_default["choices"][0]["text"] == want[0]
    assert complete(server, PROMPTS[0], (0.7, 0.3))["choices"][0]["text"] == want[0]


def test_streams_whose_replica_dies_end_with_an_error_event_and_done(server):
    """Really last: the replica is killed (Serve starts another while the module tears down)."""
    host, port = server.removeprefix("http://").split(":")
    body = {"prompt": PROMPTS[:2] * 8, "temperature": 0, "max_tokens": 64, "stream": True}
    replica = get(f"{server}/v1/stats")["replica"]
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request(
        "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200 and response.read(6) == b"data: "
    ray.kill(ray.get_actor(f"SERVE_REPLICA::moa#SteerableModel#{replica}", namespace="serve"))
    rest = response.read().decode()  # the body ends: no error from an unfinished chunked body
    events = [event.removeprefix("data: ") for event in rest.split("\n\n") if event]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "stopped before the answer ended" in error["message"]
    assert sum(json.loads(e).get("object") == "text_completion" for e in events[1:-2]) < 16 * 64
