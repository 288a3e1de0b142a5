"""The fastokens engine against tiktoken, id for id: the sample corpora, every Unicode code point in
context, literal special-token text, batches; and the choice of engine, its self-check and fallback."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tokenizer
from harness.sample import sample_texts
from tokenizer import core, engines
from tokenizer.core import SPECIAL_TOKEN_NAMES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tik() -> tokenizer.Arcade100k:
    return tokenizer.load(engine="tiktoken")


@pytest.fixture(scope="module")
def fast() -> tokenizer.Arcade100k:
    return tokenizer.load(engine="fastokens")


@pytest.fixture
def uncached_load():
    """`load` without the instances other tests cached, and without leaving these behind."""
    core.load.cache_clear()
    yield core.load
    core.load.cache_clear()


def sample_documents() -> dict[str, list[str]]:
    """The bundled sample corpus (its five sources, native formats) by source, plus this repository's
    Python sources as "repo-code"."""
    docs: dict[str, list[str]] = {}
    for source, text in sample_texts():
        docs.setdefault(source, []).append(text)
    docs["repo-code"] = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("*/*.py"))]
    return docs


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    docs = sample_documents()
    assert {"culturax", "pile", "redpajama", "refinedweb", "starcoder"} <= set(docs)
    assert all(len(texts) >= 50 for texts in docs.values()), {s: len(t) for s, t in docs.items()}
    return [text for texts in docs.values() for text in texts]


def every_code_point_in_context(per_doc: int = 512) -> list[str]:
    """Every code point but the surrogates, each between letters, doubled, and between digits,
    `per_doc` code points to a document."""
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    contexts = [f"a{ch}b {ch}{ch} 1{ch}2\n" for ch in map(chr, points)]
    return ["".join(contexts[i : i + per_doc]) for i in range(0, len(contexts), per_doc)]


def first_difference(texts: list[str], got: list[list[int]], want: list[list[int]]) -> str:
    i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    ours, ref = got[i], want[i]
    j = next((j for j, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), min(len(ours), len(ref)))
    return (
        f"document {i} ({texts[i][:60]!r}), token {j}: fastokens {ours[j : j + 5]}, tiktoken {ref[j : j + 5]}"
    )


def assert_same_ids(texts: list[str], got: list[list[int]], want: list[list[int]]) -> None:
    assert len(got) == len(want) == len(texts)
    assert got == want, first_difference(texts, got, want)


def test_each_engine_is_what_was_asked_for_and_names_the_same_vocabulary(tik, fast):
    assert (tik.engine, tik.engine_version) == ("tiktoken", importlib.metadata.version("tiktoken"))
    assert (fast.engine, fast.engine_version) == ("fastokens", "0.3.5")
    assert tokenizer.load().engine == "fastokens"  # auto, with fastokens installed and passing
    assert tik.fingerprint == fast.fingerprint == tokenizer.load().fingerprint
    assert fast.info()["engine"] == "fastokens" and fast.info()["fingerprint"] == tik.fingerprint


def test_sample_corpora_id_for_id(tik, fast, corpus):
    want = tik.encode_batch(corpus, num_threads=2)
    assert_same_ids(corpus, fast.encode_batch(corpus), want)
    assert_same_ids(corpus, [fast.encode_ordinary(t) for t in corpus], want)
    assert_same_ids(corpus, engines.split_flat(*fast.encode_ordinary_flat(corpus)), want)
    assert_same_ids(corpus, [fast.encode(t, "all") for t in corpus], [tik.encode(t, "all") for t in corpus])


def test_every_unicode_code_point_in_context_id_for_id(tik, fast):
    docs = every_code_point_in_context()
    want = tik.encode_batch(docs, num_threads=2)
    assert_same_ids(docs, fast.encode_batch(docs), want)


def test_surrogates_are_repaired_as_tiktoken_repairs_them(tik, fast):
    lone = "".join(f"a{chr(cp)}b {chr(cp)}{chr(cp)}\n" for cp in range(0xD800, 0xE000))
    texts = [lone, "pair \ud83d\ude00 reversed \ude00\ud83d", "x\ud800<|endoftext|>\udfff"]
    want = [tik.encode_ordinary(t) for t in texts]
    assert want[1] == tik.encode_ordinary("pair 😀 reversed \ufffd\ufffd")
    assert_same_ids(texts, [fast.encode_ordinary(t) for t in texts], want)
    assert_same_ids(
        ["valid", *texts], fast.encode_batch(["valid", *texts]), [tik.encode_ordinary("valid"), *want]
    )
    for enc in (fast, tik):
        assert_same_ids(texts, engines.split_flat(*enc.encode_ordinary_flat(texts)), want)
    assert fast.encode(texts[2], "all") == tik.encode(texts[2], "all")


def literal_special_texts() -> list[str]:
    names = list(SPECIAL_TOKEN_NAMES)
    return [
        *names,
        *(f"x{name}y {name}{name}\n" for name in names),
        "".join(names),
        " ".join(names),
        "<|endoftext|<|endoftext|>> <<|im_start|>| <|endoftext <|EndOfText|> <|reg8|>",
    ]


def test_literal_special_token_text_id_for_id(tik, fast):
    texts = literal_special_texts()
    specials = set(tik.special_tokens.values())
    ordinary = [fast.encode_ordinary(t) for t in texts]
    assert_same_ids(texts, ordinary, [tik.encode_ordinary(t) for t in texts])
    assert_same_ids(texts, fast.encode_batch(texts), ordinary)
    assert not any(specials & set(ids) for ids in ordinary)
    assert_same_ids(texts, [fast.encode(t, "all") for t in texts], [tik.encode(t, "all") for t in texts])
    for allowed in ([name] for name in SPECIAL_TOKEN_NAMES):
        assert_same_ids(
            texts, [fast.encode(t, allowed) for t in texts], [tik.encode(t, allowed) for t in texts]
        )
    mixed = {"<|im_start|>", "<|im_end|>", "not a special token"}
    assert_same_ids(texts, [fast.encode(t, mixed) for t in texts], [tik.encode(t, mixed) for t in texts])
    assert fast.encode("a<|im_start|>b<|endoftext|>", mixed)[1] == 100_277


@pytest.mark.parametrize("engine", ["tiktoken", "fastokens"])
def test_batch_and_flat_paths_equal_encode_ordinary(engine, corpus):
    enc = tokenizer.load(engine=engine)
    texts = [*corpus[:300], "", "x\ud800", *literal_special_texts()]
    assert enc.encode_batch(texts) == [enc.encode_ordinary(t) for t in texts]
    assert enc.encode_batch(texts, num_threads=1) == enc.encode_batch(texts, num_threads=2)
    assert enc.encode_batch([]) == []
    ids, offsets = enc.encode_ordinary_flat(texts)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64 and len(offsets) == len(texts) + 1
    assert engines.split_flat(ids, offsets) == [enc.encode_ordinary(t) for t in texts]
    assert engines.split_flat(*enc.encode_ordinary_flat([])) == []


def test_fastokens_is_thread_safe(tik, fast, corpus):
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(fast.encode_ordinary, corpus))
    assert_same_ids(corpus, got, tik.encode_batch(corpus))


def test_self_check_passes_on_the_real_engines_and_names_the_first_difference(tik, fast):
    specials = frozenset(tik.special_tokens)
    expected = engines.expectations(tik._engine, specials)
    assert engines.self_check(fast._engine, expected, specials) is None
    # One text past the 64 KiB at which fastokens splits a text between threads: a seam is checked.
    assert max(len(t.encode("utf-8", "surrogatepass")) for t in engines.SELF_CHECK_TEXTS) > 2**16
    wrong = engines.Expected("a<|endoftext|>", [64, *tik.encode_ordinary("<|endoftext|>")], [64, 0])
    assert "encode(allowed_special='all')" in engines.self_check(fast._engine, [wrong], specials)


def test_failed_self_check_makes_auto_fall_back_with_one_warning(uncached_load, monkeypatch):
    real_expectations = engines.expectations

    def one_id_off(reference: engines.Engine, specials: frozenset[str]) -> list[engines.Expected]:
        """The reference's expectations with one id of one text changed: what a broken engine gives."""
        expected = real_expectations(reference, specials)
        case = expected[1]
        expected[1] = dataclasses.replace(case, ordinary=[*case.ordinary[:-1], case.ordinary[-1] + 1])
        return expected

    monkeypatch.setattr(engines, "expectations", one_id_off)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = uncached_load(engine="auto")
    assert enc.engine == "tiktoken"
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    assert "fastokens 0.3.5 failed its self-check: its encode_ordinary of" in str(caught[0].message)
    with pytest.raises(tokenizer.TokenizerEngineError, match="failed its self-check"):
        uncached_load(engine="fastokens")


def test_tiktoken_engine_needs_no_fastokens(uncached_load, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastokens", None)  # `import fastokens` now raises ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = uncached_load(engine="tiktoken")
    assert enc.engine == "tiktoken" and enc.encode_ordinary("Hello 42") == [9906, 220, 19, 17]
    with pytest.warns(RuntimeWarning, match="fastokens is not installed"):
        assert uncached_load(engine="auto").engine == "tiktoken"
    with pytest.raises(tokenizer.TokenizerEngineError, match="not installed"):
        uncached_load(engine="fastokens")


def test_unknown_engine_is_a_clear_error(uncached_load):
    with pytest.raises(ValueError, match="engine must be one of"):
        uncached_load(engine="tokenizers")
