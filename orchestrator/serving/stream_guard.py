"""Every stream ends, even when its replica dies: an ASGI middleware for Serve's HTTP proxy.

When the replica decoding a stream dies, Serve's proxy stops the response where it is, and the
client gets neither an error nor [DONE]. In front of the proxy, `StreamGuard` ends such a stream
as a replica ends a failed one: an OpenAI-style error event, then [DONE]. The proxy loads it when
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` is `PROXY_CALLBACK` in the environment `ray start`
ran in: cluster/start-local.sh and cluster/ray-cluster.yaml export it, and a local instance that
`moa` starts itself gets it from distributed/cluster.py.
"""

from contextlib import suppress

from starlette.middleware import Middleware

from orchestrator.serving.openai_api import server_error, sse

PROXY_CALLBACK = "orchestrator.serving.stream_guard:proxy_middlewares"
STOPPED = "the replica decoding this stream stopped before the answer ended; retry the request"
ENDING = (sse(server_error(STOPPED)) + sse("[DONE]")).encode()


class StreamGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        stream = {"events": False, "open": False}

        async def watched(message):
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                stream["events"] = kind.startswith(b"text/event-stream")
                stream["open"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                stream["open"] = False
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if stream["events"] and stream["open"]:
                with suppress(Exception):  # the client may be gone too
                    await send({"type": "http.response.body", "body": ENDING, "more_body": False})


def proxy_middlewares() -> list[Middleware]:
    """What Serve's proxy calls, by import path, for the middlewares it runs."""
    return [Middleware(StreamGuard)]
