"""Export Arcade100k as a Hugging Face tokenizer folder that `AutoTokenizer.from_pretrained` loads.

The BPE merges are recovered from the ranks by the converter that transformers ships for tiktoken
vocabularies; we only put the special tokens at their released ids (cl100k leaves 100256 unused, which
the converter, appending after the last rank, would not). `tokenizers` keeps an added token at its
given id only when the model's vocabulary already holds it there, so the specials go into both.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from common.files import write_bytes
from tokenizer.chat import CHAT_TEMPLATE
from tokenizer.core import EOT_ID, PAT_STR, RANKS_FILE, Arcade100k

MODEL_MAX_LENGTH = 4096
# The tokenizer's settings file in an export; the chat template is one of them.
TOKENIZER_CONFIG = "tokenizer_config.json"


def to_hf(enc: Arcade100k) -> PreTrainedTokenizerFast:
    """The fast tokenizer that encodes exactly as `enc.encode_ordinary` / `enc.encode(..., "all")`."""
    with tempfile.TemporaryDirectory() as tmp:
        ranks_file = enc.save(Path(tmp) / RANKS_FILE)
        base = TikTokenConverter(vocab_file=str(ranks_file), pattern=PAT_STR).converted()
    spec = json.loads(base.to_str())
    spec["model"]["vocab"].update(enc.special_tokens)
    spec["added_tokens"] = [
        {
            "id": token_id,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token, token_id in enc.special_tokens.items()
    ]
    fast = Tokenizer.from_str(json.dumps(spec))
    eot = enc.decode([EOT_ID])
    return PreTrainedTokenizerFast(
        tokenizer_object=fast,
        bos_token=eot,
        eos_token=eot,
        unk_token=eot,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def export_hf(enc: Arcade100k, folder: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and arcade100k.tiktoken
    into `folder` (created if needed; files are replaced atomically, other files are left alone)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the system's: a killed export leaves nothing in `folder`
        # The template goes in tokenizer_config.json (not chat_template.jinja), where every reader looks.
        to_hf(enc).save_pretrained(tmp, save_jinja_files=False)
        enc.save(Path(tmp) / RANKS_FILE)
        for path in sorted(Path(tmp).iterdir()):
            if path.is_file():
                write_bytes(folder / path.name, path.read_bytes())
    return folder
