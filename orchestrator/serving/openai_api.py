"""The OpenAI-compatible HTTP API of the steerable model: request bodies, their validation, and
the response and stream-chunk bodies. No Ray here; `distributed/serve.py` wires it to Serve.

The preference λ comes in the body field `preference` (a list of m weights or an
{objective: weight} map; objectives a map leaves out weigh 0), or in the model name
("moa:0.7,0.3") for clients that can't add fields; without either, the server's default.
Every client mistake becomes an ApiError: a 4xx with an OpenAI-style error body whose `param`
names the field.
"""

import json
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import MoaError
from orchestrator.model.sampling import MAX_SEED, MIN_TEMPERATURE
from orchestrator.objectives.preference import validate_preference

MAX_PROMPTS = 16  # prompts in one completions request
ECHO_CHARS = 200  # of a client's value quoted back in an error message


class ApiError(Exception):
    """A client's mistake: answered with `status` and an OpenAI-style error body."""

    def __init__(self, status: int, param: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.message = status, param, message
        self.headers = headers or {}

    def body(self) -> dict:
        kind = {404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": None}}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(Body):
    include_usage: bool = False


class GenerationBody(Body):
    """The fields completions and chat share."""

    model: str | None = None  # default: the served model
    preference: list[float] | dict[str, float] | None = None
    normalize: bool = False  # rescale a preference that does not sum to 1
    max_tokens: int | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None  # default: a random one
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: None = None  # answers end at the model's end-of-sequence token
    user: str | None = None  # accepted and ignored

    @field_validator("temperature")
    @classmethod
    def _samplable(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value


class CompletionBody(GenerationBody):
    prompt: str | Annotated[list[str], Field(max_length=MAX_PROMPTS)]


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(GenerationBody):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: int | None = None  # the newer name of max_tokens


def parse_body(raw: bytes, model: type[Body]) -> Body:
    """The request body as `model`, or an ApiError naming the first field that is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, None, f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, None, "the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, None, "the request body must be a JSON object")
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ApiError(
            400, None, "the request body holds a lone surrogate (\\ud800–\\udfff): not text"
        ) from None
    except RecursionError:
        raise ApiError(400, None, "the request body is nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        # Of a union's branches, the one of the right type but too long says what is wrong.
        error = next((e for e in errors if e["type"] == "too_long"), errors[0])
        field = ".".join(str(part) for part in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            message = f"unknown field {field!r}"
        elif error["type"] == "missing":
            message = f"{field} is required"
        elif field == "stop":
            message = "stop sequences are not supported: answers end at the end-of-sequence token"
        elif field == "n":
            message = "n must be 1: one answer per request"
        elif field and field.startswith("prompt") and error["type"] == "too_long":
            message = f"prompt: at most {MAX_PROMPTS} prompts in one request"
        else:
            message = f"{field}: {error['msg']} (got {_quoted(error.get('input'))})"
        raise ApiError(400, field and field.split(".")[0], message) from None


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}… ({len(text)} characters)"


def resolve_preference(
    body: GenerationBody,
    model_name: str,
    objectives: Sequence[str],
    default: Sequence[float],
    trained_at: Sequence[float] | None = None,
) -> list[float]:
    """λ of the request, from its body or its model name, else `default`; validated. A model
    trained at one λ (`trained_at`) answers at that λ only, and by default."""
    lam = _requested(body, model_name, objectives, trained_at or default)
    if trained_at is not None and any(
        abs(a - b) > 1e-6 for a, b in zip(lam, trained_at, strict=True)
    ):
        raise ApiError(
            400,
            "preference",
            f"preference: this model was trained at one preference, "
            f"{preference_map(trained_at, objectives)}, and answers only at it (send it, or no "
            f"preference); got {preference_map(lam, objectives)}",
        )
    return lam


def _requested(
    body: GenerationBody, model_name: str, objectives: Sequence[str], default: Sequence[float]
) -> list[float]:
    served, colon, weights = (body.model or model_name).partition(":")
    if served != model_name:
        shown = _quoted(body.model)
        raise ApiError(404, "model", f"model {shown} is not served here; use {model_name!r}")
    if colon and not weights:
        raise ApiError(400, "model", f"{body.model!r}: name the weights after ':' (moa:0.7,0.3)")
    if weights and body.preference is not None:
        raise ApiError(
            400, "preference", "give the preference in the body or in the model name, not both"
        )
    if weights:
        try:
            pref = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ApiError(
                400,
                "model",
                f"{body.model!r}: the weights after ':' must be comma-separated numbers",
            ) from None
        return _checked(pref, objectives, body.normalize, "model")
    if body.preference is None:
        return list(default)
    pref = body.preference
    if isinstance(pref, dict):
        unknown = sorted(set(pref) - set(objectives))
        if unknown:
            raise ApiError(
                400,
                "preference",
                f"unknown objectives {unknown}; this model has {list(objectives)}",
            )
        pref = [pref.get(name, 0.0) for name in objectives]
    return _checked(pref, objectives, body.normalize, "preference")


def _checked(pref: list[float], objectives: Sequence[str], normalize: bool, field: str):
    try:
        lam = validate_preference(pref, len(objectives), normalize=normalize)
    except MoaError as err:
        message = str(err).replace("pass normalize=True", 'send "normalize": true')
        raise ApiError(400, field, f"{field}: {message} (objectives: {list(objectives)})") from None
    if lam.dim() != 1:
        raise ApiError(400, field, f"{field}: one preference vector per request")
    return lam.tolist()


def max_new_tokens(requested: int | None, field: str, default: int, limit: int) -> int:
    if requested is None:
        return default
    if not 1 <= requested <= limit:
        raise ApiError(400, field, f"{field} must be between 1 and {limit}; got {requested}")
    return requested


def check_prompt(ids: Sequence[int], text: str, field: str, limit: int) -> None:
    """`text` is what the client sent; `ids` are its tokens as the model sees them."""
    if not text.strip():
        raise ApiError(400, field, f"{field} is empty")
    if len(ids) > limit:
        raise ApiError(
            400, field, f"{field} is {len(ids)} tokens; this server takes at most {limit}"
        )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(kind: str, request_id: str, model: str, version: str, extra: dict) -> dict:
    """The fields every response and stream chunk carries; `preference` and `adapter_version`
    say what answered it."""
    return {
        "id": request_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": f"moa-{version}",
        **extra,
    }


def server_error(message: str) -> dict:
    """The OpenAI-style body of a failure of the server's, not the client's."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def sse(data: dict | str) -> str:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, allow_nan=False)
    return f"data: {payload}\n\n"


def preference_map(lam: Sequence[float], objectives: Sequence[str]) -> dict[str, float]:
    return {name: round(float(w), 6) for name, w in zip(objectives, lam, strict=True)}
