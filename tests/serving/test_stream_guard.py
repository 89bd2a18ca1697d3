"""The proxy's middleware: an event stream its app leaves unfinished ends with an error event
and [DONE]; finished streams and other responses pass through untouched."""

import asyncio
import contextlib

import pytest

from orchestrator.serving.stream_guard import ENDING, StreamGuard

SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]


def run(app, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.disconnect"}

    async def main():
        await StreamGuard(app)({"type": scope_type}, receive, send)

    with contextlib.suppress(RuntimeError):  # an app that raised: the guard lets it through
        asyncio.run(main())
    return sent


def responding(headers, bodies, error: Exception | None = None):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for body, more in bodies:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        if error is not None:
            raise error

    return app


@pytest.mark.parametrize("error", [None, RuntimeError("the replica died")])
def test_an_unfinished_event_stream_ends_with_an_error_event_and_done(error):
    sent = run(responding(SSE, [(b"data: {}\n\n", True)], error))
    assert [m.get("body") for m in sent[1:]] == [b"data: {}\n\n", ENDING]
    assert sent[-1]["more_body"] is False
    assert b'"type": "server_error"' in ENDING and ENDING.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("headers", "bodies"),
    [
        (SSE, [(b"data: {}\n\n", True), (b"data: [DONE]\n\n", False)]),  # it ended by itself
        (JSON, [(b"{", True)]),  # not a stream: the proxy's own handling stands
    ],
)
def test_other_responses_pass_through_untouched(headers, bodies):
    sent = run(responding(headers, bodies))
    assert [m.get("body") for m in sent[1:]] == [body for body, _ in bodies]
