"""The data loader: samples of packed shards in a seeded global order, split across data-parallel ranks.

A sample is a row of the shards, or with `window` one of the row's seq_len / window windows (each
window + 1 tokens long, so the last target is there). Every epoch draws a permutation of all samples
from (seed, epoch). Each micro-step hands the next `micro_batch * world_size` samples of that order
out, rank r taking the r-th block of `micro_batch`. The state is two numbers (epoch, position),
saved with every checkpoint, so a resumed run reads exactly the samples the uninterrupted run would
have read. An epoch's last samples that do not fill a whole micro-step are skipped.

Shards at a URL are fetched as the order reaches them (common.shards.ShardCache): each batch starts the
fetch of the shards the next one needs, so the order, and the losses, are those of a local folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tokenizer
from common.objectstore import is_url, join
from common.shards import ShardCache, ShardError, ShardSet, read_manifest
from training.validation import ALL

__all__ = ["ShardLoader", "check_token_ids", "open_shards", "open_valid_shards"]


def open_shards(
    folder: str | Path,
    seq_len: int,
    vocab_size: int,
    verify_checksums: bool = True,
    source: str | None = None,
    cache: ShardCache | None = None,
) -> ShardSet:
    """The shards in `folder` (of `source` only, if given; a URL's through `cache`), checked against the
    model and the tokenizer before any step runs; with `verify_checksums`, which reads every shard
    anyway, every token id is checked too (a remote shard's when it is fetched)."""
    enc = tokenizer.load()
    shards = ShardSet(
        folder,
        verify_checksums=verify_checksums,
        expect_seq_len=seq_len,
        expect_tokenizer=enc.fingerprint,
        expect_vocab=vocab_size,
        source=source,
        cache=cache,
        check_rows=partial(check_token_ids, vocab_size=vocab_size) if verify_checksums else None,
    )
    if shards.manifest.tokenizer.eot_id != enc.eot_id:
        raise ShardError(
            f"{folder}: documents end with id {shards.manifest.tokenizer.eot_id}, "
            f"the tokenizer's <|endoftext|> is {enc.eot_id}"
        )
    return shards


def check_token_ids(where: str | Path, rows: np.ndarray, vocab_size: int) -> None:
    """Raise ShardError naming the shard `where` and the row of its first id outside [0, vocab_size).

    A shard whose sha256 matches can still hold such ids (a packer bug, another vocabulary), and the
    embedding lookup would fail on them mid-run with an IndexError. One vectorised min and max of the
    memory-mapped shard finds them first; the row is looked up only for a bad shard.
    """
    if rows.min() >= 0 and rows.max() < vocab_size:
        return
    flat = rows.reshape(-1)
    first = int(np.flatnonzero((flat < 0) | (flat >= vocab_size))[0])
    row, position = divmod(first, rows.shape[1])
    raise ShardError(
        f"{where}: row {row} holds token id {flat[first]} at position {position}, outside the model's "
        f"vocabulary of {vocab_size} ids (0-{vocab_size - 1})"
    )


def open_valid_shards(train: ShardSet, vocab_size: int, verify_checksums: bool = True) -> dict[str, ShardSet]:
    """The validation split that the training manifest names, per source (in name order); a split
    whose shards do not all name their source is one source, `all`. Empty if the manifest names none."""
    if train.manifest.valid is None:
        return {}
    remote = is_url(train.folder)
    folder = join(train.folder, train.manifest.valid) if remote else train.folder / train.manifest.valid
    sources = {info.source for info in read_manifest(folder).shards}
    if None in sources:
        return {ALL: open_shards(folder, train.seq_len, vocab_size, verify_checksums, cache=train.cache)}
    return {
        source: open_shards(folder, train.seq_len, vocab_size, verify_checksums, source, train.cache)
        for source in sorted(sources)
    }


class ShardLoader:
    """Micro-batches (int64 [micro_batch, window + 1]) for one data-parallel rank."""

    def __init__(
        self,
        shards: ShardSet,
        micro_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        window: int | None = None,
    ):
        self.window = window or shards.seq_len
        if shards.seq_len % self.window:
            raise ShardError(
                f"{shards.folder}: window {self.window} does not divide seq_len {shards.seq_len}"
            )
        self.windows_per_row = shards.seq_len // self.window
        self.samples = len(shards) * self.windows_per_row
        if self.samples < micro_batch * world_size:
            raise ShardError(
                f"{shards.folder}: {self.samples} samples cannot fill one micro-step of "
                f"{micro_batch} samples x {world_size} ranks"
            )
        self.shards, self.micro_batch, self.seed = shards, micro_batch, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.position = 0  # samples of this epoch's order handed out so far, over all ranks
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def samples_per_micro_step(self) -> int:
        return self.micro_batch * self.world_size

    def next_batch(self) -> torch.Tensor:
        if self.position + self.samples_per_micro_step > self.samples:
            self.epoch, self.position = self.epoch + 1, 0
        samples = self._rank_samples(self.position)
        self.position += self.samples_per_micro_step
        batch = torch.from_numpy(np.stack([self._sample(int(i)) for i in samples]).astype(np.int64))
        if self.position + self.samples_per_micro_step <= self.samples:  # the next batch, this epoch
            self.shards.prefetch(int(i) // self.windows_per_row for i in self._rank_samples(self.position))
        return batch

    def _rank_samples(self, position: int) -> np.ndarray:
        """This rank's samples of the micro-step starting at `position` of this epoch's order."""
        start = position + self.rank * self.micro_batch
        return self._epoch_order()[start : start + self.micro_batch]

    def _sample(self, index: int) -> np.ndarray:
        row, window = divmod(index, self.windows_per_row)
        start = window * self.window
        return self.shards[row][start : start + self.window + 1]

    def _epoch_order(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(self.samples)
            else:
                order = np.arange(self.samples)
            self._order = (self.epoch, order)
        return self._order[1]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "samples": self.samples, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; the data must be the samples and seed it was saved with.

        The position counts rows over all ranks, so it holds for any number of ranks.
        """
        if (state["seed"], state["samples"]) != (self.seed, self.samples):
            raise ShardError(
                f"{self.shards.folder}: the checkpoint's loader ran over {state['samples']} samples with "
                f"seed {state['seed']}; these shards give {self.samples} samples and the seed is {self.seed}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
