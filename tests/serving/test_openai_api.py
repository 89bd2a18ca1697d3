"""Request bodies and preferences of the HTTP API, checked without a server."""

import json

import pytest

from orchestrator.serving.openai_api import (
    ApiError,
    ChatBody,
    CompletionBody,
    check_prompt,
    max_new_tokens,
    parse_body,
    resolve_preference,
)

OBJECTIVES = ("helpful", "harmless", "concise")
DEFAULT = [0.4, 0.3, 0.3]


def body(**fields) -> CompletionBody:
    return parse_body(json.dumps({"prompt": "hi", **fields}).encode(), CompletionBody)


def preference(**fields) -> list[float]:
    return resolve_preference(body(**fields), "moa", OBJECTIVES, DEFAULT)


def refusal(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_list_a_map_the_model_name_and_the_default_give_the_same_kind_of_lambda():
    assert preference(preference=[0.2, 0.3, 0.5]) == pytest.approx([0.2, 0.3, 0.5])
    assert preference(preference={"concise": 0.25, "helpful": 0.75}) == [0.75, 0.0, 0.25]
    assert preference(model="moa:0.6,0.2,0.2") == pytest.approx([0.6, 0.2, 0.2])
    assert preference() == DEFAULT
    assert preference(model="moa") == DEFAULT


def test_a_model_trained_at_one_lambda_takes_that_lambda_only_and_by_default():
    def fixed(**fields):
        return resolve_preference(body(**fields), "moa", OBJECTIVES, DEFAULT, (0.5, 0.5, 0.0))

    assert fixed() == [0.5, 0.5, 0.0]
    assert fixed(preference={"helpful": 0.5, "harmless": 0.5}) == pytest.approx([0.5, 0.5, 0.0])
    for other in ({"preference": [0.2, 0.3, 0.5]}, {"model": "moa:0.4,0.3,0.3"}):
        err = refusal(fixed, **other)
        assert (err.status, err.param) == (400, "preference")
        assert "trained at one preference, {'helpful': 0.5, 'harmless': 0.5, 'concise': 0.0}" in (
            err.message
        )


def test_normalize_rescales_and_without_it_the_sum_must_be_one():
    assert preference(preference=[2, 1, 1], normalize=True) == pytest.approx([0.5, 0.25, 0.25])
    assert preference(model="moa:1,1,2", normalize=True) == pytest.approx([0.25, 0.25, 0.5])
    error = refusal(preference, preference=[2, 1, 1])
    assert (error.status, error.param) == (400, "preference")
    assert '"normalize": true' in error.message and "helpful" in error.message


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"preference": [0.5, 0.5]}, "preference", "shape [3]"),
        ({"preference": [1.2, -0.1, -0.1]}, "preference", "non-negative"),
        ({"preference": [float("nan"), 0.5, 0.5]}, "preference", "finite"),
        ({"preference": [0, 0, 0]}, "preference", "all be zero"),
        ({"preference": {"helpful": 0.5, "kind": 0.5}}, "preference", "['kind']"),
        ({"model": "moa:0.5;0.5"}, "model", "comma-separated"),
        ({"model": "moa:0.5,0.5"}, "model", "shape [3]"),
        ({"model": "moa:1,0,0", "preference": [1, 0, 0]}, "preference", "not both"),
    ],
)
def test_a_bad_preference_is_a_400_naming_its_field(fields, param, words):
    error = refusal(preference, **fields)
    assert (error.status, error.param) == (400, param)
    assert words in error.message


def test_another_model_is_a_404():
    error = refusal(preference, model="gpt-4o")
    assert (error.status, error.param) == (404, "model")
    assert error.body()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b"{", None, "not valid JSON"),
        (b"\xff", None, "not valid JSON"),
        (b'"text"', None, "JSON object"),
        (b"{}", "prompt", "prompt is required"),
        (b'{"prompt": 3}', "prompt", "prompt"),
        (b'{"prompt": "hi", "max_tokens": 1.5}', "max_tokens", "max_tokens"),
        (b'{"prompt": "hi", "stream": "yes"}', "stream", "stream"),
        (b'{"prompt": "hi", "temperature": 2.5}', "temperature", "temperature"),
        (b'{"prompt": "hi", "n": 3}', "n", "n must be 1"),
        (b'{"prompt": "hi", "stop": "."}', "stop", "not supported"),
        (b'{"prompt": "hi", "preferences": [1, 0]}', "preferences", "unknown field"),
    ],
)
def test_a_malformed_body_is_a_400_naming_its_field(raw, param, words):
    error = refusal(parse_body, raw, CompletionBody)
    assert (error.status, error.param) == (400, param)
    assert words in error.message
    assert error.body() == {
        "error": {
            "message": error.message,
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }


def test_chat_bodies_need_messages_with_known_roles():
    ok = parse_body(b'{"messages": [{"role": "user", "content": "hi"}]}', ChatBody)
    assert ok.messages[0].content == "hi" and ok.temperature == 1.0 and ok.seed is None
    assert refusal(parse_body, b'{"messages": []}', ChatBody).param == "messages"
    bad_role = b'{"messages": [{"role": "robot", "content": "hi"}]}'
    assert refusal(parse_body, bad_role, ChatBody).param == "messages"


def test_max_tokens_and_prompt_limits():
    assert max_new_tokens(None, "max_tokens", 96, 256) == 96
    assert max_new_tokens(256, "max_tokens", 96, 256) == 256
    for bad in (0, 257, -3):
        error = refusal(max_new_tokens, bad, "max_tokens", 96, 256)
        assert error.param == "max_tokens" and "between 1 and 256" in error.message
    check_prompt([1, 2, 3], "abc", "prompt", 3)
    assert "empty" in refusal(check_prompt, [1, 2], " \n", "prompt", 3).message
    assert "4 tokens" in refusal(check_prompt, [1, 2, 3, 4], "abcd", "messages", 3).message
