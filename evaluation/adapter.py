"""lm-evaluation-harness's model interface over this project's StableLM, registered as `stablelm2`.

    lm_eval --model stablelm2 --model_args pretrained=runs/tiny/export,dtype=float32 ...
    (after `import evaluation.adapter`; `python -m evaluation run` does that)

`pretrained` is an export folder or a training checkpoint (`evaluation.loading`). Requests are scored as
lm-eval's `hf` model scores them, so the numbers are comparable: the same tokenization (Arcade100k,
special-token text read as the special token), `<|endoftext|>` as the context of an empty context,
left truncation to the model's context, the sum of the continuation's log-softmax, greedy meaning
argmax over the whole vocabulary, and one forward for all requests that share context + continuation
but its last token. What differs is speed: requests are sorted longest first and batched, and the
output projection and the log-softmax run only on the positions the continuations are read from,
where `hf` computes them for every position of every row (`bench.eval` measures it).

Generation is greedy with a KV cache (`evaluation.generation`) on transformers' StableLmForCausalLM
sharing this model's weights; sampling (`do_sample: true`) is refused.

lm-eval's `--apply_chat_template` (and `--system_instruction`) work on an export that ships a chat
template: prompts are rendered by its Hugging Face tokenizer's `apply_chat_template`, as `hf` renders them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, get_args

import lm_eval.models  # noqa: F401 (lm-eval's own models first: registering into an empty registry hides them)
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, StableLmForCausalLM

import tokenizer
from common.precision import Dtype, pick_device, pick_dtype
from evaluation.generation import greedy_generate
from evaluation.loading import build_models, chat_tokenizer, load_evaluated
from training.model import StableLM

__all__ = ["StableLM2"]

# A request as TemplateLM hands it on: (its strings, or None for a rolling window), context ids,
# continuation ids.
TokenRequest = tuple[tuple[str, str] | None, list[int], list[int]]


@register_model("stablelm2")
class StableLM2(TemplateLM):
    def __init__(
        self,
        pretrained: str,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int | str = 16,
        max_gen_toks: int | str = 256,
    ):
        """`dtype`: float32 (default: scores like `hf` in float32 to ~1e-6), bfloat16, float16, or
        auto (bf16 where the device computes it natively, else fp32; `common.precision`)."""
        super().__init__()
        if str(batch_size).startswith("auto"):
            raise ValueError("stablelm2 takes a fixed batch size (e.g. batch_size=16), not 'auto'")
        if dtype not in get_args(Dtype):
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(get_args(Dtype))}")
        self.trained, enc, state_dict = load_evaluated(pretrained)
        where = pick_device(device)
        self.dtype, self.dtype_choice = pick_dtype(dtype, where)
        scorer, generator = build_models(self.trained.config, state_dict, where, self.dtype)
        self._use(scorer, generator, enc, batch_size, max_gen_toks)

    def _use(
        self,
        scorer: StableLM,
        generator: StableLmForCausalLM,
        enc: tokenizer.Arcade100k,
        batch_size: int | str,
        max_gen_toks: int | str,
    ) -> None:
        """The models requests run on (sharing their weights) and the settings they run with."""
        self.model, self.generator, self.enc = scorer, generator, enc
        self._device = scorer.lm_head.weight.device
        self.batch_size = int(batch_size)
        self.max_length = scorer.cfg.max_position_embeddings
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.enc.eot_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Special-token text becomes the special token, as Hugging Face tokenizers (and `hf`) do."""
        return self.enc.encode(string, allowed_special="all")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records under `config` in its results: where the weights came from."""
        return {
            "model_path": str(self.trained.path),
            "model_kind": self.trained.kind,
            "model_num_parameters": self.model.num_params(),
            "model_dtype": str(self.dtype).removeprefix("torch."),
            "model_dtype_choice": self.dtype_choice,
            "model_device": str(self._device),
            **self.trained.provenance.tags(),
        }

    # ---- chat -------------------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        """What lm-eval fingerprints its request cache with when prompts are chat-formatted (as `hf`)."""
        return str(self.trained.path).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The export's chat template when one is asked for (lm-eval records it with the results)."""
        return self._chat_tokenizer.chat_template if chat_template else None

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The messages as one prompt in the export's chat format; without the generation prompt, the
        last (assistant) message is left open for the continuation, as `hf` renders it."""
        return self._chat_tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    @functools.cached_property
    def _chat_tokenizer(self) -> PreTrainedTokenizerBase:
        return chat_tokenizer(self.trained.path)

    # ---- loglikelihood -------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(sum of the continuation's logprobs, whether greedy decoding gives it) per request."""
        collator = Collator(
            requests,
            sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
            group_by="contexts",  # one forward per context + continuation[:-1]: one-token choices share it
            group_fn=lambda r: r[1] + r[2][:-1],
        )
        results: list[tuple[float, bool]] = []
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="stablelm2 loglikelihood")
        for chunk in collator.get_batched(n=self.batch_size):
            logprobs = self._continuation_logprobs(
                [self._window(context, cont) for _, context, cont in chunk]
            )
            for (strings, context, continuation), rows in zip(chunk, logprobs, strict=True):
                for shared_strings, cont, shared_rows in collator.get_cache(
                    req_str=strings, cxt_toks=context, cont_toks=continuation, logits=rows[None]
                ):
                    answer = _score(shared_rows[0], cont)
                    results.append(answer)
                    if shared_strings is not None:
                        self.cache_hook.add_partial("loglikelihood", shared_strings, answer)
                    progress.update(1)
        progress.close()
        return collator.get_original(results)

    def _window(self, context: list[int], continuation: list[int]) -> tuple[list[int], int]:
        """The model input for one request (left-truncated to the context, the last token dropped) and
        how many of its last positions predict the continuation."""
        if len(continuation) > self.max_length:
            raise ValueError(
                f"a continuation of {len(continuation)} tokens exceeds the context {self.max_length}"
            )
        return (context + continuation)[-(self.max_length + 1) :][:-1], len(continuation)

    @torch.inference_mode()
    def _continuation_logprobs(self, windows: Sequence[tuple[list[int], int]]) -> list[torch.Tensor]:
        """One forward over the right-padded windows; per window the fp32 log-softmax [n, vocab] at
        its last n positions. The output projection runs on those positions only: over a 100k vocab it
        is most of the work of a small model and most of the memory of any."""
        width = max(len(ids) for ids, _ in windows)
        batch = torch.full((len(windows), width), self.enc.eot_id, dtype=torch.long)
        for row, (ids, _) in enumerate(windows):
            batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        hidden = self.model.hidden_states(batch.to(self._device), eot_id=None)
        picked = torch.cat([hidden[row, len(ids) - n : len(ids)] for row, (ids, n) in enumerate(windows)])
        logits = self.model.lm_head(self.model.model.norm(picked)).float()
        return list(logits.log_softmax(-1).split([n for _, n in windows]))

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each text's logprob over disjoint windows of the model's context, as `hf` computes it; all
        windows of all texts are batched together."""
        windows: list[TokenRequest] = []
        owners: list[int] = []
        for index, (text,) in enumerate(request.args for request in requests):
            pairs = get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, pairs):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(
            owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True
        ):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ---- generation ----------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, batched by generation settings and sorted longest prompt first; each
        prompt left-truncated to leave room for max_gen_toks, as `hf` does."""
        collator = Collator(
            [(*request.args, self.tok_encode(request.args[0])) for request in requests],
            sort_fn=lambda r: (-len(r[2]), r[0]),
            group_by="gen_kwargs",
            group_fn=lambda r: r[1],
        )
        results: list[str] = []
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="stablelm2 generate_until")
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, settings, prompts = zip(*chunk, strict=True)
            texts = self._generate(list(prompts), settings[0])
            for context, text in zip(contexts, texts, strict=True):
                self.cache_hook.add_partial("generate_until", (context, settings[0]), text)
            results += texts
            progress.update(len(texts))
        progress.close()
        return collator.get_original(results)

    def _generate(self, prompts: list[list[int]], settings: dict[str, Any]) -> list[str]:
        kwargs = normalize_gen_kwargs(settings, self.max_gen_toks)
        if kwargs["do_sample"]:
            raise ValueError(f"stablelm2 decodes greedily; this task asks to sample ({settings})")
        max_new = kwargs["max_gen_toks"]
        if max_new >= self.max_length:
            raise ValueError(
                f"max_gen_toks {max_new} leaves no room for a prompt in {self.max_length} tokens"
            )
        keep = self.max_length - max_new
        truncated = [prompt[-keep:] for prompt in prompts]
        stop = handle_stop_sequences(kwargs["until"], eos=self.enc.decode([self.enc.eot_id]))
        return greedy_generate(self.generator, self.enc, truncated, stop, max_new)


def _score(logprobs: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """From the log-softmax rows ending at a continuation's last token: its total logprob, and whether
    each of its tokens is the argmax."""
    rows = logprobs[-len(continuation) :]
    target = torch.tensor(continuation, device=rows.device)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())
