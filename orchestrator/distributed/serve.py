"""The steerable model on Ray Serve: an OpenAI-compatible API with a preference λ per request.

One deployment, `SteerableModel`, behind a FastAPI ingress. A replica holds the base model with its
SVD-LoRA adapter and one continuous decoder (model/decoder.py, stepped by serving/decode_loop.py):
up to max_batch_size requests decode together, each at its own λ, and a request that arrives joins
the running batch at the next step. Tokens stream out as they are decoded; a request that does
not stream gathers its own.

The adapter and the batching knobs are the deployment's user_config. Deploying the app again with
only those changed reloads them in place (`reconfigure`): new requests wait while the admitted
ones finish on the old adapter, then decode with the new one, so no request fails. Changing
anything else restarts the replicas. `moa serve` deploys through Serve's declarative config, as
`serve deploy` does, because only that path keeps the replicas when only the user_config changes.
"""

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.config.sections import ServeSection
from orchestrator.data.encoding import chat_text, prompt_text
from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import load_adapter_tensors, read_adapter
from orchestrator.model.decoder import ContinuousDecoder
from orchestrator.model.loading import load_model, load_tokenizer, resolve_model_path
from orchestrator.model.sampling import Piece, SamplingParams, stop_token_ids
from orchestrator.serving.decode_loop import DecodeFailed, DecodeJob, DecodeLoop
from orchestrator.serving.openai_api import (
    ApiError,
    ChatBody,
    CompletionBody,
    GenerationBody,
    check_prompt,
    envelope,
    max_new_tokens,
    new_id,
    parse_body,
    preference_map,
    resolve_preference,
    server_error,
    sse,
    usage,
)
from orchestrator.serving.text_stream import TextStream

DEPLOYMENT = "SteerableModel"
MAX_BODY_BYTES = 1 << 20
IMPORT_PATH = "orchestrator.distributed.serve:build_app"


class ReplicaSpec(BaseModel):
    """What a replica is built from (the app's args): changing it restarts the replicas."""

    model_config = ConfigDict(extra="forbid")
    base_model: str
    dtype: str
    device: Literal["cpu", "cuda"]
    threads: int
    objectives: list[str]
    model_name: str
    default_preference: list[float]
    max_tokens: int
    default_max_tokens: int
    max_prompt_tokens: int


class LiveConfig(BaseModel):
    """The deployment's user_config: changing it reloads in place (`reconfigure`)."""

    model_config = ConfigDict(extra="forbid")
    adapter: str
    max_batch_size: Annotated[int, Field(ge=1)]
    batching: Literal["continuous", "static"]
    max_waiting_requests: Annotated[int, Field(ge=1)]
    queue_timeout_s: Annotated[float, Field(gt=0)]
    body_timeout_s: Annotated[float, Field(gt=0)]


def settings_version(live: LiveConfig) -> str:
    """A short hash of a user_config: /health reports the one a replica runs with."""
    return hashlib.sha256(live.model_dump_json().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DecodedAnswer:
    text: str
    tokens: int
    finish: str  # "stop" or "length"
    adapter_version: str


# Defined before the deployment class: Serve pickles it, with the globals it uses, when it is
# decorated.
api = FastAPI(title="moa: steerable model", docs_url=None, redoc_url=None)


@api.exception_handler(ApiError)
async def _client_error(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@api.exception_handler(StarletteHTTPException)
async def _route_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and methods, in the API's own error shape."""
    message = f"{request.method} {request.url.path}: {err.detail}"
    return JSONResponse(
        ApiError(err.status_code, None, message).body(), status_code=err.status_code
    )


async def read_body(request: Request, timeout_s: float) -> bytes:
    """The body of a JSON request: refused if it is not JSON, larger than MAX_BODY_BYTES or
    slower to arrive than `timeout_s`, before it is read whole."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, None, f"send the body as Content-Type: application/json; got {kind!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, None, f"the request body is over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, None, f"the request body is over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise ApiError(
            408, None, f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    return b"".join(chunks)


@api.exception_handler(DecodeFailed)
async def _decode_failed(request: Request, err: DecodeFailed) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status == 503 else None
    return JSONResponse(server_error(str(err)), status_code=err.status, headers=headers)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class SteerableModel:
    def __init__(self, spec: dict):
        self.spec = ReplicaSpec.model_validate(spec)
        torch.set_num_threads(max(1, self.spec.threads))
        self.tokenizer = load_tokenizer(self.spec.base_model)
        self.model = load_model(self.spec.base_model, self.spec.dtype, self.spec.device).eval()
        self.stops = stop_token_ids(self.model, self.tokenizer)
        # No token spans more characters than its vocabulary string: a bound on the tokens of a
        # prompt before tokenising it.
        self.token_chars = max(len(token) for token in self.tokenizer.get_vocab())
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.adapter: tuple[str, str] | None = None  # (path, version)
        self.trained_at: tuple[float, ...] | None = None  # the adapter's one λ, if fixed
        self.live: LiveConfig | None = None
        self.loop = DecodeLoop(self._new_decoder, lambda: self.adapter[1], self.executor)

    def _new_decoder(self) -> ContinuousDecoder:
        live = self.live
        return ContinuousDecoder(
            self.model,
            self.tokenizer.pad_token_id,
            self.stops,
            max_num_seqs=live.max_batch_size if live else 1,
            max_prompt_tokens=self.spec.max_prompt_tokens,
            max_new_tokens=self.spec.max_tokens,
            refill=live is None or live.batching == "continuous",
        )

    async def reconfigure(self, user_config: dict) -> None:
        live = LiveConfig.model_validate(user_config)
        loop = asyncio.get_running_loop()
        config, tensors, version = await loop.run_in_executor(None, read_adapter, live.adapter)
        names = list(config.objective_names or self.spec.objectives)
        if config.num_objectives != len(self.spec.objectives) or names != self.spec.objectives:
            raise MoaError(
                f"the adapter at {live.adapter} has objectives {config.objective_names}; "
                f"this deployment serves {self.spec.objectives}"
            )
        async with self.loop.drained():
            if self.adapter is None or self.adapter[1] != version:
                await loop.run_in_executor(
                    self.executor, load_adapter_tensors, self.model, config, tensors
                )
                self.adapter = (live.adapter, version)
                self.trained_at = config.trained_at
            shape = (live.max_batch_size, live.batching)
            rebuild = self.live is None or shape != (self.live.max_batch_size, self.live.batching)
            self.live = live
            self.loop.queue_timeout_s = live.queue_timeout_s
            if rebuild:
                self.loop.rebuild()

    async def _stream(self, job: DecodeJob) -> AsyncIterator[tuple[str, Piece, str]]:
        """(new text, piece, adapter version) as the job decodes; the pieces' texts add up to
        the whole answer's."""
        text = TextStream(self.tokenizer)
        async for piece, version in self.loop.pieces(job):
            yield text.push(piece.token, last=piece.finish is not None), piece, version

    async def _answer(self, job: DecodeJob) -> DecodedAnswer:
        """The whole answer, its text decoded once at the end."""
        ids: list[int] = []
        async for piece, version in self.loop.pieces(job):
            if piece.token is not None:
                ids.append(piece.token)
            last = (piece.finish, version)
        return DecodedAnswer(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), *last)

    def _make_room(self, answers: int) -> None:
        """Refuse `answers` more with 429 when they would wait beyond max_waiting_requests."""
        free = self.live.max_batch_size - self.loop.decoder.running
        if self.loop.waiting + answers - free > self.live.max_waiting_requests:
            raise ApiError(
                429,
                None,
                f"this replica is busy: {self.loop.waiting} requests wait for a decoding slot; "
                "retry after a second",
                headers={"Retry-After": "1"},
            )

    async def _tokenised(self, *args) -> DecodeJob:
        """_job off the event loop: a long prompt does not hold up other requests."""
        return await asyncio.get_running_loop().run_in_executor(None, self._job, *args)

    def _job(
        self, body: GenerationBody, content, render, field: str, lam: list[float]
    ) -> DecodeJob:
        """The job answering `content` (a prompt, or chat messages) formatted by `render`."""
        raw = content if isinstance(content, str) else "".join(m["content"] for m in content)
        limit = self.spec.max_prompt_tokens
        if len(raw) > self.token_chars * limit:  # too many tokens whatever they are
            raise ApiError(
                400, field, f"{field} is over {limit} tokens; this server takes at most {limit}"
            )
        try:
            text = render(self.tokenizer, content)
        except MoaError as err:
            raise ApiError(400, field, str(err)) from None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        check_prompt(ids, raw, field, limit)
        limit_field = "max_tokens"
        requested = body.max_tokens
        if isinstance(body, ChatBody) and body.max_completion_tokens is not None:
            limit_field, requested = "max_completion_tokens", body.max_completion_tokens
        tokens = max_new_tokens(
            requested, limit_field, self.spec.default_max_tokens, self.spec.max_tokens
        )
        seed = body.seed if body.seed is not None else secrets.randbits(31)
        params = SamplingParams(tokens, body.temperature, body.top_p, seed)
        return DecodeJob(ids, lam, params)

    def _preference(self, body: GenerationBody) -> list[float]:
        spec = self.spec
        return resolve_preference(
            body, spec.model_name, spec.objectives, spec.default_preference, self.trained_at
        )

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        body = parse_body(await read_body(request, self.live.body_timeout_s), CompletionBody)
        lam = self._preference(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt", "prompt is an empty list")
        self._make_room(len(prompts))
        jobs = [await self._tokenised(body, p, prompt_text, "prompt", lam) for p in prompts]
        head = {"preference": preference_map(lam, self.spec.objectives)}
        request_id = new_id("cmpl")

        def chunk(index: int, text: str, finish: str | None, version: str) -> dict:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            return self._envelope("text_completion", request_id, version, head, [choice])

        if body.stream:
            return self._sse(jobs, body, chunk, head, "text_completion", request_id)
        answers = await asyncio.gather(*(self._answer(job) for job in jobs))
        choices = [
            {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish}
            for i, a in enumerate(answers)
        ]
        return self._response("text_completion", request_id, jobs, answers, head, choices)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        body = parse_body(await read_body(request, self.live.body_timeout_s), ChatBody)
        lam = self._preference(body)
        messages = [m.model_dump() for m in body.messages]
        self._make_room(1)
        job = await self._tokenised(body, messages, chat_text, "messages", lam)
        head = {"preference": preference_map(lam, self.spec.objectives)}
        request_id = new_id("chatcmpl")

        def chunk(index: int, text: str, finish: str | None, version: str) -> dict:
            delta = {"content": text} if text or finish is None else {}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self._envelope("chat.completion.chunk", request_id, version, head, [choice])

        if body.stream:
            return self._sse([job], body, chunk, head, "chat.completion.chunk", request_id)
        answer = await self._answer(job)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": None,
            "finish_reason": answer.finish,
        }
        return self._response("chat.completion", request_id, [job], [answer], head, [choice])

    def _envelope(self, kind: str, request_id: str, version: str, head: dict, choices) -> dict:
        extra = {"choices": choices, **head, "adapter_version": version}
        return envelope(kind, request_id, self.spec.model_name, version, extra)

    def _response(
        self, kind, request_id, jobs, answers: list[DecodedAnswer], head, choices
    ) -> dict:
        body = self._envelope(kind, request_id, answers[0].adapter_version, head, choices)
        prompt_tokens = sum(len(job.prompt_ids) for job in jobs)
        body["usage"] = usage(prompt_tokens, sum(a.tokens for a in answers))
        return body

    def _sse(self, jobs: list[DecodeJob], body, chunk, head, kind, request_id) -> StreamingResponse:
        """The answers as server-sent events: chunks as tokens decode, the usage last when the
        client asked for it, then [DONE]; if decoding fails, an error event, then [DONE]."""

        async def events():
            queue: asyncio.Queue = asyncio.Queue()

            async def pump(index: int, job: DecodeJob):
                tokens = 0
                try:
                    async for text, piece, version in self._stream(job):
                        tokens += piece.token is not None
                        await queue.put(chunk(index, text, piece.finish, version))
                except DecodeFailed as err:
                    await queue.put(err)
                    return
                await queue.put((index, tokens))

            role = None  # a chat stream opens with the role, on the adapter it decodes with
            if kind == "chat.completion.chunk":
                role = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
            try:
                finished, completion_tokens, version = 0, 0, self.adapter[1]
                while finished < len(jobs):
                    item = await queue.get()
                    if isinstance(item, DecodeFailed):
                        yield sse(server_error(str(item))) + sse("[DONE]")
                        return
                    if isinstance(item, tuple):
                        finished += 1
                        completion_tokens += item[1]
                        continue
                    version = item["adapter_version"]
                    if role is not None:
                        yield sse(self._envelope(kind, request_id, version, head, [role]))
                        role = None
                    yield sse(item)
                if body.stream_options is not None and body.stream_options.include_usage:
                    prompt_tokens = sum(len(job.prompt_ids) for job in jobs)
                    tail = self._envelope(kind, request_id, version, head, [])
                    tail["usage"] = usage(prompt_tokens, completion_tokens)
                    yield sse(tail)
                yield sse("[DONE]")
            finally:
                for task in tasks:
                    task.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.get("/v1/models")
    async def models(self) -> dict:
        model = {"id": self.spec.model_name, "object": "model", "created": 0, "owned_by": "moa"}
        return {"object": "list", "data": [model]}

    @api.get("/v1/preferences")
    async def preferences(self) -> dict:
        spec = self.spec
        m = len(spec.objectives)
        accepted = (
            f"a list of {m} non-negative weights summing to 1, or an {{objective: weight}} map "
            '(objectives left out weigh 0); "normalize": true rescales any non-negative, '
            "not-all-zero weights"
        )
        trained_at = None
        if self.trained_at is not None:
            trained_at = preference_map(self.trained_at, spec.objectives)
            accepted = f"only {trained_at}: this model was trained at that one preference"
        return {
            "objectives": spec.objectives,
            "default_preference": preference_map(
                self.trained_at or spec.default_preference, spec.objectives
            ),
            "trained_at": trained_at,
            "adapter": Path(self.adapter[0]).name,
            "adapter_version": self.adapter[1],
            "model": spec.model_name,
            "accepts": {
                "preference": accepted,
                "model": f"{spec.model_name} or {spec.model_name}:w1,...,wm",
                "max_tokens": f"1 to {spec.max_tokens} (default {spec.default_max_tokens})",
                "prompt_tokens": f"at most {spec.max_prompt_tokens}",
            },
        }

    @api.get("/v1/stats")
    async def stats(self) -> dict:
        """This replica's decoding so far: requests admitted, decoding steps, and the rows a
        step decoded (mean and most)."""
        loop = self.loop
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "requests": loop.admitted,
            "steps": loop.steps,
            "rows": loop.rows,
            "mean_batch": loop.rows / max(loop.steps, 1),
            "largest_batch": loop.largest,
            "running": loop.decoder.running,
            "max_batch_size": self.live.max_batch_size,
            "batching": self.live.batching,
        }

    @api.get("/health")
    async def health(self) -> dict:
        return {
            "status": "ok",
            "adapter_version": self.adapter[1],
            "settings_version": settings_version(self.live),
        }


def build_app(args: dict) -> serve.Application:
    """The application `import_path` names: a replica spec in, the bound deployment out."""
    return SteerableModel.bind(ReplicaSpec.model_validate(args).model_dump())


@dataclass(frozen=True)
class ServedModel:
    """What `moa serve SOURCE` serves: a base model, an adapter and the serve settings."""

    base_model: str
    dtype: str
    objectives: list[str]
    adapter: Path
    adapter_version: str
    settings: ServeSection

    def replica_spec(self) -> ReplicaSpec:
        s = self.settings
        m = len(self.objectives)
        return ReplicaSpec(
            base_model=resolve_model_path(self.base_model),
            dtype=self.dtype,
            device="cuda" if s.num_gpus > 0 else "cpu",
            threads=max(1, int(s.num_cpus)),
            objectives=self.objectives,
            model_name=s.model_name,
            default_preference=s.default_preference or [1.0 / m] * m,
            max_tokens=s.max_tokens,
            default_max_tokens=s.default_max_tokens,
            max_prompt_tokens=s.max_prompt_tokens,
        )

    def live_config(self) -> LiveConfig:
        s = self.settings
        return LiveConfig(
            adapter=str(self.adapter.resolve()),
            max_batch_size=s.max_batch_size,
            batching=s.batching,
            max_waiting_requests=s.max_waiting_requests,
            queue_timeout_s=s.queue_timeout_s,
            body_timeout_s=s.body_timeout_s,
        )

    def application(self) -> dict:
        """This model as an application of a Serve config (what `serve deploy` takes)."""
        s = self.settings
        deployment = {
            "name": DEPLOYMENT,
            "user_config": self.live_config().model_dump(),
            "max_ongoing_requests": s.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
        }
        if s.min_replicas == s.max_replicas:
            deployment["num_replicas"] = s.min_replicas
        else:
            deployment["autoscaling_config"] = {
                "min_replicas": s.min_replicas,
                "max_replicas": s.max_replicas,
                "target_ongoing_requests": s.target_ongoing_requests,
            }
        return {
            "name": s.app_name,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": self.replica_spec().model_dump(),
            "deployments": [deployment],
        }


def deploy(served: ServedModel, timeout_s: float = 600.0) -> str:
    """Deploy (or update in place) `served` on the connected Ray cluster; returns the base URL
    once the app runs with this adapter. Other apps deployed from a config are kept."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    s = served.settings
    client = serve_start(http_options={"host": s.host, "port": s.port})
    details = client.get_serve_details()
    others = [
        app["deployed_app_config"]
        for name, app in details.get("applications", {}).items()
        if name != s.app_name and app.get("deployed_app_config")
    ]
    config = {"applications": [*others, served.application()]}
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    # Serve already running keeps its own address, whatever serve.host and serve.port say.
    http = details.get("http_options") or {}
    host, port = http.get("host") or s.host, http.get("port") or s.port
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    running = {
        "adapter_version": served.adapter_version,
        "settings_version": settings_version(served.live_config()),
    }
    _wait_until_serving(s.app_name, url, running, timeout_s)
    return url


def _wait_until_serving(app: str, url: str, running: dict, timeout_s: float) -> None:
    """Until `url`'s /health reports `running` (this adapter and these live settings: a reload
    in place is done only then)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "DEPLOY_FAILED":
            raise MoaError(f"deploying {app} failed: {status.message}")
        if status is not None and status.status == "RUNNING":
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    health = json.load(response)
                    if all(health.get(key) == value for key, value in running.items()):
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
        if time.monotonic() > deadline:
            detail = status.message if status is not None else "not deployed"
            raise MoaError(f"{app} did not start serving within {timeout_s:.0f} s: {detail}")
        time.sleep(0.5)


def undeploy(app_name: str) -> None:
    serve.delete(app_name)
