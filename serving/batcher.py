"""Continuous batching: one worker thread owns the model and decodes all running sequences together.

Waiting sequences join the running batch whenever slots are free (after one prefill forward for the
newcomers), and a sequence leaves the batch at the step it finishes or is cancelled, so short requests
never wait for long ones. The running batch shares one left-padded KV cache (`serving.padded_cache`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.precision import pick_device, pick_dtype
from serving import loading
from serving.config import ServeConfig
from serving.metrics import Metrics
from serving.model_path import ModelError
from serving.padded_cache import PaddedCache
from serving.sampling import SamplingParams, TokenLogprob, sample, token_logprobs, valid_token_mask
from tokenizer import TextStream

log = logging.getLogger(__name__)

PROMPT_LOGPROB_CHUNK = 512  # prompt positions per lm_head call: [chunk, vocab] floats at a time


@dataclass
class Output:
    """What one step produced for one sequence; `text` is new text since the previous Output."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None  # stop, length, error; None while running
    prompt_logprobs: list[TokenLogprob | None] | None = None  # with the first Output, when asked


class Sequence:
    """One choice of one request, as the worker sees it. `cancel` may be called from any thread."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_output: Callable[[Output], None],
        text: TextStream,
        device: torch.device,
    ):
        self.prompt_ids = prompt_ids
        self.params = params
        self.on_output = on_output
        self.text = text
        self.generated: list[int] = []
        self.finish_reason: str | None = None
        self.cancelled = False
        self.prompt_logprobs: list[TokenLogprob | None] | None = None
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, token: int | None, logprob: TokenLogprob | None, finish_reason: str | None) -> None:
        self.finish_reason = finish_reason
        out = Output(
            text=self.text.take(final=finish_reason is not None),
            token_ids=[] if token is None else [token],
            logprobs=None if self.params.logprobs is None else ([] if logprob is None else [logprob]),
            finish_reason=finish_reason,
            prompt_logprobs=self.prompt_logprobs,
        )
        self.prompt_logprobs = None
        self.on_output(out)


@dataclass
class Batch:
    """The running sequences and their shared, left-padded KV cache."""

    seqs: list[Sequence]
    kv: PaddedCache
    next_ids: torch.Tensor  # [B] the last sampled token, fed at the next step


class Batcher:
    def __init__(self, folder: Path, config: ServeConfig, metrics: Metrics):
        self.folder = folder
        self.config = config
        self.metrics = metrics
        self.model_config = loading.load_config(folder)
        self.enc = loading.load_tokenizer(folder)
        self.device = pick_device(config.device)
        self.dtype, why = pick_dtype(config.dtype, self.device)
        log.info("running in %s on %s: %s", self.dtype_name, self.device, why)
        n_positions = self.model_config.max_position_embeddings
        if config.max_model_len is not None and config.max_model_len > n_positions:
            raise ModelError(
                f"max_model_len {config.max_model_len} exceeds max_position_embeddings {n_positions}"
            )
        self.max_model_len = config.max_model_len or n_positions
        self.vocab_size = self.model_config.vocab_size
        self.valid = valid_token_mask(self.enc, self.vocab_size, self.device)
        self._valid_ids = self.valid.tolist()  # checked per prompt token on the HTTP side: no device syncs
        self.model = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._load_attempted = threading.Event()
        self._cv = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._batch: Batch | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="serving-batcher", daemon=True)

    # ---- called from the HTTP side -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None

    @property
    def dtype_name(self) -> str:
        """The dtype as the config spells it: float32, bfloat16 or float16."""
        return str(self.dtype).removeprefix("torch.")

    def is_token(self, token_id: int) -> bool:
        return 0 <= token_id < self.vocab_size and self._valid_ids[token_id]

    def wait_loaded(self) -> None:
        """Block until the worker has loaded the model or failed to."""
        self._load_attempted.wait()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=30)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, on_output: Callable[[Output], None]
    ) -> Sequence:
        """Queue a sequence; `on_output` is called from the worker thread after every step."""
        seq = Sequence(prompt_ids, params, on_output, TextStream(self.enc, params.stop), self.device)
        with self._cv:
            self._waiting.append(seq)
            self.metrics.waiting.set(len(self._waiting))
            self._cv.notify()
        return seq

    # ---- the worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            started = time.perf_counter()
            self.model = loading.load_model(self.folder, self.device, self.dtype)
            log.info(
                "loaded %s on %s (%s) in %.1fs",
                self.folder,
                self.device,
                self.dtype,
                time.perf_counter() - started,
            )
        except Exception as e:  # the server stays up and reports it on /health
            log.exception("cannot load the model")
            self.error = f"cannot load the model: {e}"
            return
        finally:
            self._load_attempted.set()
        self._ready.set()
        with torch.inference_mode():
            while (newcomers := self._next_work()) is not None:
                try:
                    self._step(newcomers)
                except Exception:  # fail these requests, keep serving the next ones
                    log.exception("generation step failed")
                    failed = newcomers + (self._batch.seqs if self._batch else [])
                    self._batch = None
                    for seq in failed:
                        if seq.finish_reason is None:
                            self._finish(seq, None, None, "error")
                self.metrics.running.set(len(self._batch.seqs) if self._batch else 0)

    def _next_work(self) -> list[Sequence] | None:
        """Sleep until there is something to do; the waiting sequences that fit now; None to exit."""
        with self._cv:
            while not self._stopping and not self._waiting and self._batch is None:
                self._cv.wait()
            if self._stopping:
                return None
            running = len(self._batch.seqs) if self._batch else 0
            newcomers: list[Sequence] = []
            longest = 0
            while self._waiting and running + len(newcomers) < self.config.max_batch_size:
                seq = self._waiting[0]
                longest = max(longest, len(seq.prompt_ids))
                if newcomers and longest * (len(newcomers) + 1) > self.config.max_prefill_tokens:
                    break
                newcomers.append(self._waiting.popleft())
            self.metrics.waiting.set(len(self._waiting))
            return newcomers

    def _step(self, newcomers: list[Sequence]) -> None:
        if self._batch is not None:
            self._batch = self._keep(self._batch, [s for s in self._batch.seqs if s.cancelled])
        for seq in newcomers:
            if seq.cancelled:
                self.metrics.finished.labels("cancelled").inc()
        newcomers = [s for s in newcomers if not s.cancelled]
        if newcomers:
            self._batch = self._merge(self._batch, self._prefill(newcomers))
        if self._batch is not None:
            self._batch = self._decode(self._batch)

    def _prefill(self, seqs: list[Sequence]) -> Batch | None:
        """Run the newcomers' prompts, left-padded to one width; sample each one's first token."""
        kv, hidden = PaddedCache.prefill(self.model, [s.prompt_ids for s in seqs], self.enc.eot_id)
        self.metrics.prefill_batch_size.observe(len(seqs))
        self.metrics.prompt_tokens.inc(sum(len(s.prompt_ids) for s in seqs))
        width = hidden.shape[1]
        for row, seq in enumerate(seqs):
            if seq.params.prompt_logprobs is not None:
                seq.prompt_logprobs = self._prompt_logprobs(hidden[row, width - len(seq.prompt_ids) :], seq)
        return self._advance(seqs, kv, self.model.lm_head(hidden[:, -1]).float())

    def _prompt_logprobs(self, hidden: torch.Tensor, seq: Sequence) -> list[TokenLogprob | None]:
        """Logprob of every prompt token after the first, given the ones before it (for echo)."""
        targets = torch.tensor(seq.prompt_ids[1:], device=self.device)
        found: list[TokenLogprob | None] = [None]
        for start in range(0, len(targets), PROMPT_LOGPROB_CHUNK):
            stop = start + PROMPT_LOGPROB_CHUNK
            logits = self.model.lm_head(hidden[start : min(stop, len(targets))])
            found += token_logprobs(logits, targets[start:stop], seq.params.prompt_logprobs, self.valid)
        return found

    def _decode(self, batch: Batch) -> Batch | None:
        """Feed every running sequence its last token; sample the next."""
        self.metrics.batch_size.observe(len(batch.seqs))
        hidden = batch.kv.decode(self.model, batch.next_ids)
        return self._advance(batch.seqs, batch.kv, self.model.lm_head(hidden[:, -1]).float())

    def _advance(self, seqs: list[Sequence], kv: PaddedCache, logits: torch.Tensor) -> Batch | None:
        """Sample a token for each row, hand it out, and drop the sequences that finished."""
        params = [s.params for s in seqs]
        tokens = sample(logits, params, [s.generator for s in seqs], self.valid)
        want = [row for row, p in enumerate(params) if p.logprobs is not None]
        logprobs: dict[int, TokenLogprob] = {}
        for n_top in {params[row].logprobs for row in want}:
            rows = [row for row in want if params[row].logprobs == n_top]
            found = token_logprobs(logits[rows], tokens[rows], n_top, self.valid)
            logprobs.update(zip(rows, found, strict=True))
        done = []
        for row, (seq, token) in enumerate(zip(seqs, tokens.tolist(), strict=True)):
            if seq.params.max_tokens == 0:  # echo-only scoring: the prompt's logprobs, nothing generated
                self._finish(seq, None, None, "length")
            else:
                seq.generated.append(token)
                self._finish(seq, token, logprobs.get(row), self._finish_reason(seq, token))
            if seq.finish_reason is not None:
                done.append(seq)
        self.metrics.generation_tokens.inc(sum(1 for s in seqs if s.params.max_tokens > 0))
        return self._keep(Batch(seqs, kv, tokens), done)

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        if token == self.enc.eot_id:
            return "stop"
        if seq.text.add(token):
            return "stop"
        if len(seq.generated) >= seq.params.max_tokens:
            return "length"
        return None

    def _finish(
        self, seq: Sequence, token: int | None, logprob: TokenLogprob | None, reason: str | None
    ) -> None:
        seq.emit(token, logprob, reason)
        if reason is not None:
            self.metrics.finished.labels(reason).inc()

    def _keep(self, batch: Batch, leaving: list[Sequence]) -> Batch | None:
        """The batch without `leaving`, its cache trimmed of columns that are now padding in every row."""
        if not leaving:
            return batch
        for seq in leaving:
            if seq.cancelled and seq.finish_reason is None:
                self.metrics.finished.labels("cancelled").inc()
        gone = {id(s) for s in leaving}
        rows = [row for row, s in enumerate(batch.seqs) if id(s) not in gone]
        if not rows:
            return None
        return Batch(
            [batch.seqs[row] for row in rows],
            batch.kv.select(rows),
            batch.next_ids[torch.tensor(rows, device=self.device)],
        )

    def _merge(self, a: Batch | None, b: Batch | None) -> Batch | None:
        """One batch from two (`PaddedCache.merge`)."""
        if a is None or b is None:
            return a or b
        return Batch(a.seqs + b.seqs, a.kv.merge(b.kv), torch.cat([a.next_ids, b.next_ids]))
