"""The server, run for real on loopback (`python -m serving`), driven by the `openai` client and plain HTTP.

The model is a tiny random StableLmForCausalLM export; every expected output comes from transformers
run on the same export in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from conftest import CONTEXT, KEY, NAME, api_post, make_checkpoint, started_server, wait_for_health
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from transformers import AutoTokenizer, StableLmForCausalLM

import tokenizer
from serving.app import create_app
from serving.batcher import Batcher
from serving.config import ServeConfig
from serving.metrics import Metrics
from serving.model_path import ModelError, export_to_serve
from serving.padded_cache import PaddedCache, layer_states
from serving.sampling import SamplingParams, sample, valid_token_mask
from serving.text import token_str
from training.hf import TRAINING_RUN, load_hf

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away, there lived",
    "1 + 1 =",
    "Stable LM 2 is a small language model trained on two trillion tokens of",
]


@pytest.fixture(scope="module")
def reference(export: Path) -> StableLmForCausalLM:
    return StableLmForCausalLM.from_pretrained(export, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(export: Path, server_dir: Path) -> Iterator[str]:
    config = f"served_model_name: {NAME}\nmax_batch_size: 32\ndevice: cpu\ndtype: bfloat16\n"
    # float32, as for evaluation: what the tests compare with is transformers in float32.
    with started_server(export, server_dir, config, args=["--dtype", "float32"]) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def _greedy(model: StableLmForCausalLM, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy continuation of each prompt (one left-padded batch), up to its EOT."""
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.EOT_ID] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.EOT_ID,
    )
    found = []
    for row in out[:, width:].tolist():
        found.append(row[: row.index(tokenizer.EOT_ID) + 1] if tokenizer.EOT_ID in row else row)
    return found


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _wait_until_freed(server: str, cancelled, before: float) -> float:
    """Poll /metrics until an abandoned sequence is cancelled and no sequence runs; the deadline used."""
    deadline = time.monotonic() + 30
    while cancelled() == before:
        assert time.monotonic() < deadline, "the abandoned sequence was not cancelled"
        time.sleep(0.1)
    while _metrics(server)[("serving_running_sequences", ())] != 0:
        assert time.monotonic() < deadline, "the abandoned sequence still holds a slot"
        time.sleep(0.1)
    return deadline


def test_greedy_equals_transformers_generate(client, reference, enc):
    ids = [enc.encode(p) for p in PROMPTS[:3]]
    result = client.completions.create(
        model=NAME, prompt=PROMPTS[:3], max_tokens=24, temperature=0, logprobs=0
    )
    assert [c.index for c in result.choices] == [0, 1, 2]
    for choice, prompt_ids in zip(result.choices, ids, strict=True):
        [expected] = _greedy(reference, [prompt_ids], 24)  # one at a time: no padding at all
        assert choice.logprobs.tokens == [token_str(enc, t) for t in expected]
        assert choice.text == enc.decode([t for t in expected if t != tokenizer.EOT_ID])
    assert result.usage.prompt_tokens == sum(map(len, ids))
    assert result.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in result.choices)


def test_streaming_matches_and_ends_with_done(client, server):
    plain = client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=12, temperature=0)
    chunks = list(
        client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=12, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == plain.choices[0].finish_reason == "length"
    assert len(chunks) > 1

    body = {"model": NAME, "prompt": PROMPTS[1], "max_tokens": 4, "stream": True, "echo": True}
    body["stream_options"] = {"include_usage": True}
    with httpx.stream(
        "POST", f"{server}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert '"usage"' in events[-2] and '"completion_tokens": 4' in events[-2]
    assert PROMPTS[1] in events[0]  # echo comes with the first chunk


@pytest.mark.parametrize("tokenized", [True, False])
def test_echo_logprobs_score_like_lm_eval(server, reference, enc, tokenized):
    """lm-eval's local-completions loglikelihood request, and its parser, against the model's forward."""
    pairs = [
        ("The capital of France is", " Paris"),
        ("def fibonacci(n):", "\n    return n"),
        ("1 + 1 =", " 2"),
    ]
    contexts = [enc.encode(c) for c, _ in pairs]
    wholes = [enc.encode(c + cont) for c, cont in pairs]
    prompt = wholes if tokenized else [c + cont for c, cont in pairs]
    body = {"model": NAME, "prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    response = api_post(server, body | {"seed": 1234})
    assert response.status_code == 200, response.text
    choices = sorted(response.json()["choices"], key=lambda c: c["index"])
    for choice, ids, ctx in zip(choices, wholes, contexts, strict=True):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(ids) + 1
        assert lp["tokens"][: len(ids)] == [token_str(enc, t) for t in ids]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        ctxlen = len(ctx)
        served = sum(lp["token_logprobs"][ctxlen:-1])
        served_greedy = all(
            t == max(top.values())
            for t, top in zip(lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1], strict=True)
        )

        with torch.no_grad():
            logprobs = reference(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        targets = torch.tensor(ids[ctxlen:])
        expected = logprobs[ctxlen - 1 : -1].gather(1, targets[:, None]).sum().item()
        expected_greedy = bool((logprobs[ctxlen - 1 : -1].argmax(-1) == targets).all())
        assert served == pytest.approx(expected, abs=1e-3)
        assert served_greedy == expected_greedy
        assert choice["text"].startswith(enc.decode(ids))


def test_echo_with_zero_max_tokens_scores_the_whole_prompt(server, reference, enc):
    ids = enc.encode(PROMPTS[4])
    body = {"model": NAME, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0}
    choice = api_post(server, body).json()["choices"][0]
    with torch.no_grad():
        logprobs = reference(torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = logprobs[:-1].gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1).tolist()
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(expected, abs=1e-4)
    assert choice["text"] == PROMPTS[4] and choice["finish_reason"] == "length"


def test_32_concurrent_requests_are_batched_and_correct(server, reference, enc):
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(32)]
    before = _metrics(server)

    async def run_all():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0) as client:
            calls = [
                client.completions.create(
                    model=NAME, prompt=p, max_tokens=8 + i % 5, temperature=0, logprobs=0
                )
                for i, p in enumerate(prompts)
            ]
            return await asyncio.gather(*calls)

    results = asyncio.run(run_all())
    references = _greedy(reference, [enc.encode(p) for p in prompts], 12)
    for i, (prompt, result, expected) in enumerate(zip(prompts, results, references, strict=True)):
        tokens = [token_str(enc, t) for t in expected[: 8 + i % 5]]
        assert result.choices[0].logprobs.tokens == tokens, prompt
    after = _metrics(server)
    steps = after[("serving_batch_size_count", ())] - before.get(("serving_batch_size_count", ()), 0)
    single = after[("serving_batch_size_bucket", (("le", "1.0"),))] - before.get(
        ("serving_batch_size_bucket", (("le", "1.0"),)), 0
    )
    assert steps > single, "no decode step ran more than one sequence"
    assert after[("serving_running_sequences", ())] == 0


def test_greedy_takes_the_best_token_never_an_id_that_is_none(enc):
    valid = valid_token_mask(enc, tokenizer.PADDED_VOCAB, torch.device("cpu"))
    logits = torch.randn(4, tokenizer.PADDED_VOCAB, generator=torch.Generator().manual_seed(0))
    logits[0, tokenizer.N_VOCAB + 5] = 100.0  # a padding row of the embedding is the best
    logits[1, 100_256] = 100.0  # the id cl100k leaves unused
    logits[2] = 0.0  # all equal: the first id
    greedy = [SamplingParams(max_tokens=1, temperature=0.0)] * 4
    tokens = sample(logits, greedy, [None] * 4, valid)
    assert tokens.tolist() == logits.masked_fill(~valid, -torch.inf).argmax(-1).tolist()
    assert bool(valid[tokens].all()) and tokens[2] == 0


def test_sampling_parameters(client, enc):
    def sample(**kw):
        return client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=16, **kw)

    seeded = sample(temperature=1.0, seed=7, n=3)
    assert len(seeded.choices) == 3
    again = sample(temperature=1.0, seed=7, n=3)
    assert [c.text for c in again.choices] == [c.text for c in seeded.choices]
    assert len({c.text for c in seeded.choices}) > 1  # choice i uses seed + i
    greedy = sample(temperature=0).choices[0].text
    assert sample(temperature=1.5, seed=3, extra_body={"top_k": 1}).choices[0].text == greedy
    assert sample(temperature=1.0, top_p=1e-6, seed=3).choices[0].text == greedy
    assert sample(temperature=1e-30).choices[0].text == greedy

    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    stopped = sample(temperature=0, stop=[stop, "never appears"]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == greedy[: greedy.index(stop)]
    streamed = "".join(c.choices[0].text for c in sample(temperature=0, stop=stop, stream=True))
    assert streamed == stopped.text


BAD_REQUESTS = [
    ({"prompt": "hi", "temperature": 2.5}, "temperature"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "top_k": -2}, "top_k"),
    ({"prompt": "hi", "n": 0}, "n"),
    ({"prompt": "hi", "n": 17}, "n"),
    ({"prompt": "hi", "logprobs": 6}, "logprobs"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": CONTEXT}, "max_tokens"),
    ({"prompt": [1] * CONTEXT}, "max_tokens"),  # fits, but not with the default 16 tokens more
    ({"prompt": [1] * (CONTEXT + 1)}, "prompt"),
    ({"prompt": [5, 100_300]}, "prompt"),
    ({"prompt": [5, 100_256]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": "hi", "stop": [str(i) for i in range(17)]}, "stop"),
    ({"prompt": "hi", "stop": ""}, "stop"),
    ({"prompt": "hi", "stop": ["x" * 257]}, "stop"),
    ({"prompt": "hi", "seed": 2**64}, "seed"),
    ({"prompt": "hi", "top_k": 2**40}, "top_k"),
    ({"prompt": "hi", "presence_penalty": 0.5}, "presence_penalty"),
    ({"prompt": "hi", "best_of": 2}, "best_of"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(server, fields, param):
    response = api_post(server, {"model": NAME} | fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_malformed_bodies_and_unknown_models(server, client, export):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for raw in (b"{", b"[1, 2]", b"null", b'{"model": "tiny", "prompt": "x"'):
        response = httpx.post(f"{server}/v1/completions", content=raw, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["message"], raw
    # A path in `model` is a name that does not match, never something the server opens.
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model=str(export), prompt="hi", max_tokens=1)
    assert e.value.body["code"] == "model_not_found"
    assert httpx.get(f"{server}/v1/nothing-here", headers=headers).status_code == 404
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    completions = [
        dict(labels)["status"]
        for (name, labels) in _metrics(server)
        if name == "serving_requests_total" and dict(labels)["route"] == "/v1/completions"
    ]
    assert completions and not any(status.startswith("5") for status in completions)


def test_api_key_guards_all_but_health_and_metrics(server, client):
    for key in (None, "wrong"):
        assert api_post(server, {"model": NAME, "prompt": "hi"}, key=key).status_code == 401
        assert api_post(server, {"prompt": "hi"}, path="/tokenize", key=key).status_code == 401
        assert api_post(server, {"tokens": [1]}, path="/detokenize", key=key).status_code == 401
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        assert httpx.get(f"{server}/v1/models", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/metrics").status_code == 200


def test_command_line_dtype_overrides_the_config_and_is_reported(server, client, server_dir):
    [card] = client.models.list().data
    assert card.model_extra["dtype"] == "float32"
    assert "running in float32 on cpu: float32 as set" in (server_dir / "server.log").read_text()


def test_tokenize_and_detokenize_match_the_hf_tokenizer(server, export, enc):
    text = "Hello, world! 12345 <|endoftext|> café"
    hf_ids = AutoTokenizer.from_pretrained(export)(text)["input_ids"]
    tokens = api_post(server, {"prompt": text}, path="/tokenize").json()
    assert (
        tokens["tokens"] == hf_ids and tokens["count"] == len(hf_ids) and tokens["max_model_len"] == CONTEXT
    )
    assert api_post(server, {"tokens": hf_ids}, path="/detokenize").json() == {"prompt": text}
    bad = api_post(server, {"tokens": [1, 100_999]}, path="/detokenize")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_client_disconnecting_mid_stream_frees_its_slot(server):
    def cancelled() -> float:
        return _metrics(server).get(("serving_sequences_finished_total", (("reason", "cancelled"),)), 0)

    before = cancelled()
    body = {"model": NAME, "prompt": "hi", "max_tokens": CONTEXT - 10, "stream": True}
    with httpx.stream(
        "POST", f"{server}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    # Leaving the block closed the connection after one event; ~2000 tokens were still to come.
    _wait_until_freed(server, cancelled, before)


def test_client_disconnecting_before_a_plain_response_frees_its_slot(server):
    def cancelled() -> float:
        return _metrics(server).get(("serving_sequences_finished_total", (("reason", "cancelled"),)), 0)

    before = cancelled()
    body = {"model": NAME, "prompt": "hi", "max_tokens": CONTEXT - 10}
    # The client gives up long before ~2000 tokens can be generated, which closes its connection.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server}/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=httpx.Timeout(60, read=0.5),
        )
    deadline = _wait_until_freed(server, cancelled, before)
    requests = ("serving_requests_total", (("route", "/v1/completions"), ("status", "499")))
    while _metrics(server).get(requests, 0) == 0:
        assert time.monotonic() < deadline, "the abandoned request was not counted as 499"
        time.sleep(0.1)


def test_health_is_503_until_the_model_is_loaded(export):
    batcher = Batcher(export, ServeConfig(device="cpu"), Metrics())
    app = create_app(batcher, NAME)
    idle = TestClient(app)  # outside `with`, the lifespan (which loads the model) has not run
    assert idle.get("/health").status_code == 503 and idle.get("/health").json() == {"status": "loading"}
    response = idle.post("/v1/completions", json={"model": NAME, "prompt": "hi"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    with TestClient(app) as client:
        wait_for_health(client, "ok")
        response = client.post("/v1/completions", json={"model": NAME, "prompt": "hi", "max_tokens": 2})
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 2


def test_weights_that_do_not_load_keep_health_at_503(export, tmp_path):
    for name in os.listdir(export):
        if name != "model.safetensors":
            (tmp_path / name).write_bytes((export / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    app = create_app(Batcher(tmp_path, ServeConfig(device="cpu"), Metrics()), NAME)
    with TestClient(app) as client:
        body = wait_for_health(client, "error")
        assert client.get("/health").status_code == 503 and "cannot load the model" in body["error"]
        assert client.post("/v1/completions", json={"model": NAME, "prompt": "hi"}).status_code == 503


def test_model_paths_are_exports_or_checkpoints_and_errors_say_why(export, tmp_path):
    assert export_to_serve(export) == (export, None)
    with pytest.raises(ModelError, match="no such file or folder"):
        export_to_serve(tmp_path / "missing")
    # Neither an export nor a checkpoint: why it is neither is shown.
    with pytest.raises(ModelError, match="no config.json.*nor a training checkpoint"):
        export_to_serve(tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(ModelError, match="do not include StableLmForCausalLM.*nor a training checkpoint"):
        export_to_serve(tmp_path)


def test_a_checkpoint_is_served_from_a_temporary_export_of_it(export, tmp_path):
    root = make_checkpoint(export, tmp_path / "checkpoints", tokenizer.load().fingerprint)
    folder, scratch = export_to_serve(root)
    try:
        assert folder == scratch / "export"
        ours, theirs = load_hf(folder)[1], load_hf(export)[1]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[name], theirs[name].float()) for name in ours)
        assert json.loads((folder / TRAINING_RUN).read_text())["mlflow_run_id"] == "run-abc"
    finally:
        shutil.rmtree(scratch)


def test_rows_that_leave_or_join_a_padded_cache_decode_as_if_alone(reference, enc):
    """Dropping rows (which trims the padding left behind) and merging caches of different widths leave
    each row's next step as it is alone. Also pins the layout `layer_states` reads from transformers'
    cache layers, so that an upgrade that changes it fails here: [B, kv heads, T, head_dim] per layer."""
    prompts = [enc.encode(p) for p in PROMPTS]
    token = torch.tensor(enc.encode(" the"))
    with torch.inference_mode():
        alone = [PaddedCache.prefill(reference, [p], enc.eot_id)[0].decode(reference, token) for p in prompts]
        first, _ = PaddedCache.prefill(reference, prompts[:3], enc.eot_id)
        second, _ = PaddedCache.prefill(reference, prompts[3:], enc.eot_id)
        kv = first.select([0, 1]).merge(second)  # drops the longest prompt of the first batch
        assert first.mask.shape[1] > max(len(p) for p in prompts[:2]) == first.select([0, 1]).mask.shape[1]
        hidden = kv.decode(reference, token.repeat(4))
    torch.testing.assert_close(hidden, torch.cat([alone[i] for i in (0, 1, 3, 4)]), atol=1e-4, rtol=0)
    config = reference.config
    head_dim = config.hidden_size // config.num_attention_heads
    states = layer_states(kv.cache)
    assert len(states) == config.num_hidden_layers
    for keys, values in states:
        assert keys.shape == values.shape == (4, config.num_key_value_heads, kv.mask.shape[1], head_dim)
        assert kv.cache.get_seq_length() == kv.mask.shape[1]
