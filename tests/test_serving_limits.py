"""The server against hostile input: bodies over the size limit, requests for too many sequences, prompts
at and past the context, text that has no UTF-8 form, a stream that fails after its 200, and a big request
that must not hold up /health.

A real server on loopback with the default limits, and the app in this process where a test needs to
reach inside (to make the batcher fail, or to hold a request in its tokenizer).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pytest
from conftest import CONTEXT, KEY, NAME, api_post, started_server, wait_for_health
from starlette.testclient import TestClient

from serving.app import create_app
from serving.batcher import Batcher
from serving.completions import Completion
from serving.config import ServeConfig
from serving.metrics import Metrics

LIMITS = ServeConfig()  # the server below runs with the default limits
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = f"served_model_name: {NAME}\ndevice: cpu\ndtype: float32\n"
    with started_server(export, tmp_path_factory.mktemp("server"), config) as url:
        yield url


@pytest.fixture(scope="module")
def batcher(export: Path) -> Batcher:
    return Batcher(export, ServeConfig(device="cpu", dtype="float32"), Metrics())


@pytest.fixture(scope="module")
def app(batcher: Batcher) -> Iterator[TestClient]:
    """The app in this process (no API key), its model loaded."""
    with TestClient(create_app(batcher, NAME)) as client:
        wait_for_health(client, "ok")
        yield client


def _sized_body(size: int) -> bytes:
    """A valid one-token completion request of exactly `size` bytes, padded in its `user` field."""
    empty = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 1, "user": ""}).encode()
    return empty[:-2] + b"x" * (size - len(empty)) + empty[-2:]


def _raw_post(url: str, content: bytes | Iterator[bytes], path: str = "/v1/completions") -> httpx.Response:
    return httpx.post(f"{url}{path}", content=content, headers=HEADERS, timeout=60)


def test_a_body_over_the_limit_by_its_length_is_413_and_one_at_the_limit_is_served(server):
    assert _raw_post(server, _sized_body(LIMITS.max_body_bytes)).status_code == 200
    response = _raw_post(server, _sized_body(LIMITS.max_body_bytes + 1))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and str(LIMITS.max_body_bytes) in error["message"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_a_chunked_body_is_counted_and_refused_before_it_is_all_sent(server):
    chunk = b"x" * (1 << 20)
    sent = []

    def chunked(n_chunks: int) -> Iterator[bytes]:
        """A completion request whose `user` field is `n_chunks` MiB, sent without a Content-Length."""
        yield b'{"model": "tiny", "prompt": "hi", "max_tokens": 1, "user": "'
        for _ in range(n_chunks):
            sent.append(len(chunk))
            yield chunk
        yield b'"}'

    assert _raw_post(server, chunked(2)).status_code == 200  # within the limit: read and served whole
    sent.clear()
    n_chunks = 8 * LIMITS.max_body_bytes // len(chunk)
    response = _raw_post(server, chunked(n_chunks))
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert sum(sent) < 4 * LIMITS.max_body_bytes, "the server read on past its limit"


def test_more_sequences_than_the_limit_is_400_naming_the_numbers(server):
    n = LIMITS.max_n
    n_prompts = LIMITS.max_sequences // n + 1
    response = api_post(server, {"model": NAME, "prompt": ["hi"] * n_prompts, "n": n, "max_tokens": 1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "n"
    for number in (f"{n_prompts * n} sequences", f"{n_prompts} prompts x n={n}", str(LIMITS.max_sequences)):
        assert number in error["message"]
    at_limit = {"model": NAME, "prompt": ["hi"] * (n_prompts - 1), "n": n, "max_tokens": 0}
    assert api_post(server, at_limit).status_code == 200


def test_a_prompt_that_fills_the_context_is_scored_with_max_tokens_0(server):
    """lm-eval's loglikelihood asks for exactly this: the whole context echoed with its logprobs."""
    body = {"model": NAME, "prompt": [9906] * CONTEXT, "max_tokens": 0, "echo": True, "logprobs": 1}
    response = api_post(server, body)
    assert response.status_code == 200, response.text
    choice, usage = response.json()["choices"][0], response.json()["usage"]
    logprobs = choice["logprobs"]["token_logprobs"]
    assert len(logprobs) == CONTEXT and logprobs[0] is None and all(lp <= 0 for lp in logprobs[1:])
    assert usage == {"prompt_tokens": CONTEXT, "completion_tokens": 0, "total_tokens": CONTEXT}


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "param"),
    [(CONTEXT, 1, "max_tokens"), (CONTEXT - 1, 2, "max_tokens"), (CONTEXT + 1, 0, "prompt")],
)
def test_a_prompt_plus_max_tokens_past_the_context_is_refused(server, prompt, max_tokens, param):
    body = {"model": NAME, "prompt": [9906] * prompt, "max_tokens": max_tokens, "echo": True}
    response = api_post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == param
    assert str(CONTEXT) in error["message"]


LONE_SURROGATES = [
    ({"prompt": "echo \udfff", "echo": True}, "prompt"),
    ({"prompt": "echo \udfff", "echo": True, "stream": True}, "prompt"),
    ({"prompt": ["fine", "not \ud800 fine"]}, "prompt"),
    ({"prompt": "hi", "stop": "\udc00"}, "stop"),
    ({"prompt": "hi", "stop": ["fine", "\udfff"], "stream": True}, "stop"),
    ({"prompt": "hi", "model": "tiny\udfff"}, "model"),
    ({"prompt": "hi", "user": "\ud83d"}, "user"),
    ({"prompt": "hi", "\udfff": 1}, None),
    ({"prompt": "hi", "stream": True, "stream_options": {"\udfff": True}}, "stream_options"),
]


@pytest.mark.parametrize(("fields", "param"), LONE_SURROGATES)
def test_text_without_utf8_form_is_400_never_500_nor_a_cut_stream(server, fields, param):
    body = json.dumps({"model": NAME, "max_tokens": 2} | fields).encode()  # \u escapes, as JSON allows
    with httpx.Client(headers=HEADERS) as client:
        response = client.post(f"{server}/v1/completions", content=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "not valid Unicode" in error["message"]
        assert response.headers.get("connection") != "close"
        assert client.get(f"{server}/health").status_code == 200  # the connection still serves


@pytest.mark.parametrize(
    ("path", "body"),
    [("/tokenize", {"prompt": "\udfff"}), ("/detokenize", {"tokens": [1], "model": "\udfff"})],
)
def test_tokenize_and_detokenize_refuse_text_without_utf8_form(server, path, body):
    response = _raw_post(server, json.dumps(body).encode(), path=path)
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"model": "tiny", "prompt": "caf\xe9"}', "not valid UTF-8"),  # Latin-1, not UTF-8
        (b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too deeply"),
    ],
)
def test_bodies_that_cannot_be_parsed_are_400_saying_why(server, content, says):
    response = _raw_post(server, content)
    assert response.status_code == 400 and says in response.json()["error"]["message"]


def test_a_surrogate_pair_is_one_character_and_served(server):
    body = json.dumps({"model": NAME, "prompt": "smile \U0001f642", "echo": True, "max_tokens": 1}).encode()
    assert "\\ud83d\\ude42" in body.decode()
    response = _raw_post(server, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"].startswith("smile \U0001f642")


def _events(client: TestClient, body: dict) -> tuple[int, list[str]]:
    with client.stream("POST", "/v1/completions", json=body) as response:
        return response.status_code, [line for line in response.iter_lines() if line]


def test_a_stream_whose_generation_fails_ends_with_an_error_event_and_done(app, batcher, monkeypatch):
    def fail(*_):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(batcher, "_decode", fail)  # the prefill samples the first token, then this fails
    status, events = _events(app, {"model": NAME, "prompt": "hi", "max_tokens": 8, "stream": True})
    assert status == 200
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["text"] is not None
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "generation_error"
    assert events[-1] == "data: [DONE]"


def test_a_stream_that_fails_to_shape_a_chunk_ends_with_an_error_event_and_done(app, monkeypatch):
    def fail(*_):
        raise ValueError("injected failure")

    monkeypatch.setattr(Completion, "_delta_json", fail)
    status, events = _events(app, {"model": NAME, "prompt": "hi", "max_tokens": 8, "stream": True})
    assert status == 200
    assert json.loads(events[-2].removeprefix("data: "))["error"]["type"] == "server_error"
    assert events[-1] == "data: [DONE]"


@pytest.mark.parametrize("path", ["/v1/completions", "/tokenize"])
def test_health_answers_while_a_big_request_is_being_tokenized(app, batcher, monkeypatch, path):
    """The big request is held inside its tokenizer until /health has answered: on the event loop, that
    tokenizing would keep /health from answering at all until it is released."""
    tokenizing, release = threading.Event(), threading.Event()
    encode = batcher.enc.encode

    def held(text: str, allowed_special=()) -> list[int]:
        tokenizing.set()
        release.wait(timeout=60)
        return encode(text, allowed_special)

    monkeypatch.setattr(batcher.enc, "encode", held)
    big = {"model": NAME, "prompt": "The quick brown fox jumps over the lazy dog. " * 25_000}
    with ThreadPoolExecutor(2) as pool:
        request = pool.submit(app.post, path, json=big)
        assert tokenizing.wait(timeout=30)
        health = pool.submit(app.get, "/health")
        answered = wait([health], timeout=10).done
        still_tokenizing = not request.done()
        release.set()
        assert request.result(timeout=60).status_code in (200, 400)  # 400: longer than the context
    assert health in answered and still_tokenizing and health.result().json() == {"status": "ok"}
