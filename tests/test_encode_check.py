"""The pack encoder's exactness check: which documents it samples, that a planted difference stops it
with the document named, and that the real engines pass it; the encoder's threads under Ray."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest
import tiktoken
from conftest import OneIdOff

import tokenizer
from pipeline.encode import Encode, EncodingMismatch, exactness_check, first_difference, verify_sampled

WORDS = "the quick brown fox 2024 jumps über naïve 東京 <|endoftext|> def f(x): return x\n\n".split(" ")


def documents(n: int) -> pa.Table:
    """`n` documents of a code source and a prose source, texts different and long enough for FIM."""
    rows = [
        {"id": f"doc/{i}", "text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(20 + i)), "source": s}
        for i, s in zip(range(n), ["code", "web"] * n, strict=False)
    ]
    return pa.Table.from_pylist(rows)


def test_the_sample_is_seeded_by_id_and_near_the_rate():
    ids = [f"web/{i}" for i in range(20_000)]
    sample = [i for i in ids if verify_sampled(7, i, 0.01)]
    assert sample == [i for i in ids if verify_sampled(7, i, 0.01)]  # the same on every run
    assert 150 < len(sample) < 250
    assert sample != [i for i in ids if verify_sampled(8, i, 0.01)]  # another seed, another sample
    assert not any(verify_sampled(7, i, 0.0) for i in ids[:1000])
    assert all(verify_sampled(7, i, 1.0) for i in ids[:1000])


def test_first_difference_is_the_first_position_or_the_shorter_end():
    ids, _ = tokenizer.load().encode_ordinary_flat(["one two three"])
    want = ids.tolist()
    assert first_difference(ids, want) is None
    assert first_difference(ids, [*want[:1], want[1] + 1, *want[2:]]) == 1
    assert first_difference(ids, want[:-1]) == len(want) - 1
    assert first_difference(ids[:-1], want) == len(want) - 1


def test_the_check_is_against_tiktoken_and_only_where_there_is_something_to_check():
    assert exactness_check(tokenizer.load(engine="tiktoken"), 1, 1.0) is None  # tiktoken is the reference
    assert exactness_check(tokenizer.load(engine="fastokens"), 1, 0.0) is None
    check = exactness_check(tokenizer.load(engine="fastokens"), 1, 0.01)
    assert isinstance(check.reference, tiktoken.Encoding)  # not the engine checked
    assert check.reference.name == tokenizer.NAME and check.rate == 0.01


def test_a_planted_difference_names_the_document_and_the_position():
    table = documents(40)
    doc_id, text = table.column("id")[17].as_py(), table.column("text")[17].as_py()
    encode = Encode(3, 1, [], 0.0, 0.5, engine="fastokens", verify_rate=1.0)
    encode.check = dataclasses.replace(encode.check, reference=OneIdOff(text, 5))
    message = (
        rf"document '{doc_id}': fastokens \S+ and tiktoken differ at token 5 of its characters 0:{len(text)} "
    )
    with pytest.raises(EncodingMismatch, match=message):
        encode.encode(table)


def test_the_real_engines_pass_the_check_on_every_document_and_fim_piece():
    table = documents(60)
    encoded = Encode(3, 1, ["code"], 1.0, 0.5, engine="fastokens", verify_rate=1.0).encode(table)
    reference = Encode(3, 1, ["code"], 1.0, 0.5, engine="tiktoken").encode(table)
    assert encoded.column("tokens").to_pylist() == reference.column("tokens").to_pylist()
    fim_prefix = tokenizer.SPECIAL_TOKENS["<|fim_prefix|>"]
    assert sum(ids[0] == fim_prefix for ids in encoded.column("tokens").to_pylist()) == 30
