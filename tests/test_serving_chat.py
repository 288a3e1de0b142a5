"""/v1/chat/completions on the real server (`python -m serving`), driven by the `openai` client, plain HTTP
and lm-eval's `local-chat-completions`.

What a chat request generates is pinned to `/v1/completions` on the prompt that transformers renders
from the export's own chat template: equal greedy tokens mean the server rendered and encoded the
messages exactly so. Exports with another template, or none, are served by the app in this process.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import KEY, NAME, api_post, started_server, wait_for_health
from starlette.testclient import TestClient
from transformers import AutoTokenizer, PreTrainedTokenizerBase

import tokenizer
from serving.app import create_app
from serving.batcher import Batcher
from serving.chat import ChatTemplate
from serving.config import ServeConfig
from serving.metrics import Metrics

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
# ChatML, whose tags are special tokens of Arcade100k: a template unlike the one exports ship.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def server(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = f"served_model_name: {NAME}\ndevice: cpu\n"
    # float32, so that a chat choice and a completion of the same tokens generate the same greedy tokens
    with started_server(
        export, tmp_path_factory.mktemp("server"), config, args=["--dtype", "float32"]
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def hf(export: Path) -> PreTrainedTokenizerBase:
    """The export's tokenizer as transformers (and so lm-eval) loads it: what renders the expected prompts."""
    return AutoTokenizer.from_pretrained(export)


def _rendered(hf: PreTrainedTokenizerBase, messages: list[dict]) -> str:
    return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_a_greedy_reply_is_the_greedy_completion_of_the_rendered_prompt(client, hf, enc):
    chat = client.chat.completions.create(
        model=NAME, messages=CHAT, max_tokens=16, temperature=0, logprobs=True, top_logprobs=2
    )
    plain = client.completions.create(
        model=NAME, prompt=_rendered(hf, CHAT), max_tokens=16, temperature=0, logprobs=2
    )
    [choice], [expected] = chat.choices, plain.choices
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert [t.token for t in choice.logprobs.content] == expected.logprobs.tokens
    assert [t.logprob for t in choice.logprobs.content] == expected.logprobs.token_logprobs
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    for entry in choice.logprobs.content:
        assert len(entry.top_logprobs) == 2
        assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (entry.token, entry.logprob)
        assert entry.bytes == list(entry.token.encode())  # these tokens are whole UTF-8


def test_a_stream_has_the_role_first_then_the_reply_and_usage(client, server):
    kwargs = {"model": NAME, "messages": CHAT, "max_completion_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(**kwargs, logprobs=True)
    chunks = list(
        client.chat.completions.create(
            **kwargs, logprobs=True, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    *steps, last = chunks
    assert steps[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content for c in steps) == plain.choices[0].message.content
    tokens = [t.token for c in steps for t in c.choices[0].logprobs.content]
    assert tokens == [t.token for t in plain.choices[0].logprobs.content]
    assert [c.choices[0].finish_reason for c in steps][-1] == "length"
    assert last.choices == [] and last.usage == plain.usage

    body = {"model": NAME, "messages": CHAT, "max_tokens": 2, "stream": True}
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"


def test_n_seeded_choices_differ_from_each_other_and_repeat(client):
    kwargs = {"model": NAME, "messages": CHAT, "max_tokens": 8, "temperature": 1.0, "n": 3}
    first = client.chat.completions.create(**kwargs, seed=7)
    again = client.chat.completions.create(**kwargs, seed=7)
    other = client.chat.completions.create(**kwargs, seed=8)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert [c.message.content for c in again.choices] == texts
    assert [c.message.content for c in other.choices] != texts
    assert first.usage.completion_tokens == 24


def test_stop_strings_and_token_limits(client):
    kwargs = {"model": NAME, "messages": CHAT, "temperature": 0}
    reply = client.chat.completions.create(**kwargs, max_tokens=16).choices[0].message.content
    stop = reply[10:14]
    stopped = client.chat.completions.create(**kwargs, max_tokens=16, stop=[stop, "never there"])
    assert stopped.choices[0].message.content == reply[: reply.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    # max_completion_tokens, OpenAI's newer name, wins over max_tokens.
    short = client.chat.completions.create(**kwargs, max_tokens=9, max_completion_tokens=3)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(**kwargs, max_completion_tokens=10**6)
    assert error.value.body["code"] == "context_length_exceeded"
    assert error.value.body["param"] == "max_completion_tokens"


def test_special_token_text_in_a_message_is_plain_text(client, hf, enc):
    messages = [{"role": "user", "content": "one <|endoftext|> two <|im_start|>"}]
    ids = ChatTemplate(hf).encode(messages)
    assert enc.decode(ids) == _rendered(hf, messages)
    assert ids.count(enc.eot_id) == 1 and enc.special_tokens["<|im_start|>"] not in ids  # the template's EOT
    chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
    by_ids = client.completions.create(model=NAME, prompt=ids, max_tokens=8, temperature=0)
    assert chat.usage.prompt_tokens == len(ids)
    assert chat.choices[0].message.content == by_ids.choices[0].text
    # The same text sent as a completion's prompt is encoded with its special tokens, as lm-eval expects.
    as_text = client.completions.create(model=NAME, prompt=_rendered(hf, messages), max_tokens=1)
    assert as_text.usage.prompt_tokens < len(ids)


def test_bad_chat_requests_are_400_in_openai_shape(client, server):
    cases = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),  # the template's own refusal
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages"),
        ({"messages": CHAT, "top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"messages": CHAT, "logprobs": True, "top_logprobs": 6}, "top_logprobs"),
        ({"messages": CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
    ]
    for body, param in cases:
        response = api_post(server, {"model": NAME, **body}, "/v1/chat/completions")
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, response.text
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}]
    joined = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": parts}], max_tokens=4, temperature=0
    )
    plain = [{"role": "user", "content": "What is the capital\nof France?"}]
    alone = client.chat.completions.create(model=NAME, messages=plain, max_tokens=4, temperature=0)
    assert joined.choices == alone.choices  # text parts are joined with newlines


def test_the_route_has_the_key_check_and_its_own_metrics(server):
    body = {"model": NAME, "messages": CHAT, "max_tokens": 1}
    assert api_post(server, body, "/v1/chat/completions", key=None).status_code == 401
    assert api_post(server, body, "/v1/chat/completions").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    assert 'serving_requests_total{route="/v1/chat/completions",status="401"}' in metrics
    assert 'serving_requests_total{route="/v1/chat/completions",status="200"}' in metrics


def test_lm_eval_local_chat_completions_generates_what_the_openai_client_gets(client, server):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval.models.api_models import JsonChatStr

    lm = get_model("local-chat-completions")(
        base_url=f"{server}/v1/chat/completions",
        model=NAME,
        tokenizer_backend=None,
        header={"Authorization": f"Bearer {KEY}"},
        max_retries=1,
    )
    chats = [CHAT, [{"role": "user", "content": "Write a haiku about the sea."}]]
    gen_kwargs = {"until": ["\n\n"], "max_gen_toks": 12, "temperature": 0}
    requests = [
        Instance("generate_until", {}, (JsonChatStr(json.dumps(chat)), dict(gen_kwargs)), i)
        for i, chat in enumerate(chats)
    ]
    expected = [
        client.chat.completions.create(model=NAME, messages=chat, max_tokens=12, temperature=0, stop=["\n\n"])
        .choices[0]
        .message.content
        for chat in chats
    ]
    assert lm.generate_until(requests, disable_tqdm=True) == expected


@contextlib.contextmanager
def _app_on_copy(export: Path, folder: Path, template: str | None) -> Iterator[TestClient]:
    """The app in this process on a copy of `export` whose chat template is `template` (None: none).
    The copy has no ranks file, so it is served with the default Arcade100k (the same), loaded already."""
    shutil.copytree(export, folder, ignore=shutil.ignore_patterns(tokenizer.RANKS_FILE))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template")
    config_file.write_text(json.dumps(config | ({"chat_template": template} if template else {})))
    batcher = Batcher(folder, ServeConfig(device="cpu", dtype="float32"), Metrics())
    with TestClient(create_app(batcher, NAME)) as app:
        wait_for_health(app, "ok")
        yield app


def test_an_export_without_a_template_refuses_chat_but_serves_completions(export, tmp_path):
    with _app_on_copy(export, tmp_path / "plain", None) as app:
        response = app.post("/v1/chat/completions", json={"model": NAME, "messages": CHAT})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "chat_template_missing" and "no chat template" in error["message"]
        assert app.post("/v1/completions", json={"model": NAME, "prompt": "hi"}).status_code == 200


def test_an_export_is_chatted_with_in_its_own_template(export, tmp_path, enc):
    with _app_on_copy(export, tmp_path / "chatml", CHATML) as app:
        rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CHAT)
        ids = enc.encode(rendered + "<|im_start|>assistant\n", allowed_special="all")
        body = {"model": NAME, "max_tokens": 8, "temperature": 0}
        chat = app.post("/v1/chat/completions", json=body | {"messages": CHAT}).json()
        plain = app.post("/v1/completions", json=body | {"prompt": ids}).json()
        assert (
            chat["usage"]["prompt_tokens"] == len(ids)
            and ids.count(tokenizer.SPECIAL_TOKENS["<|im_end|>"]) == 4
        )
        assert chat["choices"][0]["message"]["content"] == plain["choices"][0]["text"]
