"""Per-source validation: bits per byte on a planted row, the per-source sums combining to the overall
numbers, and the validation split read per source (a split packed whole as one source, `all`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import MICRO_MODEL, SEQ, token_rows, write_shard_folder, write_shards, write_valid_by_source

import tokenizer
from common.shards import ShardError, ShardSet
from training.data import open_shards, open_valid_shards
from training.model import ModelConfig, StableLM
from training.validation import ALL, score, token_bytes, validation_metrics

EOT = tokenizer.EOT_ID
VOCAB = ModelConfig(**MICRO_MODEL).vocab_size
# Two bytes for ü and ß, three for 東 and —: bytes are not characters.
PLANTED = "Grüße aus Köln: 東京 — naïve café, 42 €."


@pytest.fixture(scope="module", name="model")
def micro_model() -> StableLM:
    torch.manual_seed(0)
    return StableLM(ModelConfig(**MICRO_MODEL)).eval()


def planted_row(width: int) -> tuple[torch.Tensor, int]:
    """[1, width] ids: <|endoftext|>, PLANTED, <|endoftext|>, then padding; and how many targets are
    PLANTED's tokens plus its closing <|endoftext|>."""
    ids = tokenizer.load().encode_ordinary(PLANTED)
    row = [EOT, *ids, EOT] + [EOT] * (width - len(ids) - 2)
    return torch.tensor([row]), len(ids) + 1


def test_bits_per_byte_of_a_planted_row_are_its_loss_in_bits_over_its_utf8_bytes(model):
    enc = tokenizer.load()
    table = token_bytes(enc, VOCAB)
    assert int(table[enc.encode_ordinary(PLANTED)].sum()) == len(PLANTED.encode("utf-8"))
    assert int(table[EOT]) == 0

    rows, scored = planted_row(SEQ + 1)
    nats, tokens, nbytes = score(model, rows, EOT, table).tolist()
    # The same numbers from the model's logits: cross-entropy of the text's tokens and its closing
    # <|endoftext|>; the padding after it is not scored.
    with torch.no_grad():
        logits = model(rows[:, :-1], eot_id=EOT)[0].float()
    per_token = F.cross_entropy(logits, rows[0, 1:], reduction="none")
    assert tokens == scored and nbytes == len(PLANTED.encode("utf-8"))
    assert nats == pytest.approx(float(per_token[:scored].sum()), rel=1e-5)
    metrics = validation_metrics({"planted": torch.tensor([nats, tokens, nbytes])})
    expected_bpb = float(per_token[:scored].sum()) / (math.log(2) * len(PLANTED.encode("utf-8")))
    assert metrics["val/planted/bpb"] == pytest.approx(expected_bpb, rel=1e-5)
    assert metrics["val/planted/loss"] == pytest.approx(float(per_token[:scored].mean()), rel=1e-5)
    assert metrics["val_bpb"] == metrics["val/planted/bpb"]


def test_per_source_numbers_combine_to_the_overall_ones(model):
    table = token_bytes(tokenizer.load(), VOCAB)
    rows = torch.from_numpy(token_rows(6).astype(np.int64))
    prose = planted_row(SEQ + 1)[0]
    sums = {"code": score(model, rows[:4], EOT, table), "prose": score(model, prose, EOT, table)}
    metrics = validation_metrics(sums)
    tokens = {name: float(t[1]) for name, t in sums.items()}
    nbytes = {name: float(t[2]) for name, t in sums.items()}
    loss = sum(metrics[f"val/{n}/loss"] * tokens[n] for n in sums) / sum(tokens.values())
    bpb = sum(metrics[f"val/{n}/bpb"] * nbytes[n] for n in sums) / sum(nbytes.values())
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-9)
    assert metrics["val_bpb"] == pytest.approx(bpb, rel=1e-9)
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["val/code/loss"] != pytest.approx(metrics["val/prose/loss"])


def test_the_split_is_read_per_source_and_a_split_packed_whole_as_all(tmp_path):
    table = token_rows(10)
    train = open_shards(write_shards(tmp_path / "old", rows=4, valid_rows=6), SEQ, VOCAB)
    (only,) = open_valid_shards(train, VOCAB).values()
    assert list(open_valid_shards(train, VOCAB)) == [ALL] and len(only) == 6

    new = write_shard_folder(tmp_path / "new", table[:4], valid="valid")
    write_valid_by_source(new / "valid", {"web": table[4:9], "code": table[9:]})
    by_source = open_valid_shards(open_shards(new, SEQ, VOCAB), VOCAB)
    assert list(by_source) == ["code", "web"]
    assert np.array_equal(np.stack(list(by_source["web"])), table[4:9])
    assert np.array_equal(np.stack(list(by_source["code"])), table[9:])
    assert len(ShardSet(new / "valid")) == 6  # a reader of the whole split sees every row
    with pytest.raises(ShardError, match="no shards of source 'books'"):
        ShardSet(new / "valid", source="books")
