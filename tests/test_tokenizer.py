"""Arcade100k: ids checked against an independent pure-Python construction, the HF export, the CLI."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import subprocess
import sys

import pytest
import regex

import tokenizer
from tokenizer.core import CL100K_SHA256, SPECIAL_TOKEN_NAMES, TokenizerFileError, cl100k_ranks_path

SAMPLES = [
    "Hello, world! The year 2024 has 365 days; π ≈ 3.14159.",
    "Phone: +1 (555) 010-9999, price $1,299.99, version v2.10.3, 1e-5",
    "Über die Brücke gehen wir morgen früh um 7 Uhr.",
    "¿Dónde está la biblioteca? Está a 300 metros.",
    "L'été dernier, nous sommes allés à Paris.",
    "Het weer in Nederland is vaak wisselvallig.",
    "A língua portuguesa é falada em 9 países.",
    "日本語のテキストと中文文本，以及한국어 문장。",
    "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 and flags 🇩🇪🇫🇷",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }',
    "   leading spaces, trailing spaces   ",
    "\n\n\nmany\r\n\r\nnewlines\n \n  \n",
    "tabs\t\tand\u00a0non-breaking\u2009spaces",
    "it's they're we've I'm you'll he'd IT'S",
    "literal specials: <|endoftext|> <|fim_prefix|> <|im_start|> <reponame> <|reg3|>",
    "",
]


def reference_encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """Textbook byte-level BPE (merge the lowest-ranked adjacent pair until none is left), run on
    the released pre-tokenization pattern with the `regex` module: independent of tiktoken."""
    ids = []
    for piece in regex.findall(tokenizer.PAT_STR, text):
        parts = [bytes([b]) for b in piece.encode()]
        while len(parts) > 1:
            pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
            best = min(((r, i) for r, i in pairs if r is not None), default=None)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids


@pytest.fixture(scope="module")
def released_ranks() -> dict[bytes, int]:
    ranks = {}
    for line in cl100k_ranks_path().read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def test_vocabulary_facts(enc):
    assert enc.n_vocab == 100_289 == tokenizer.N_VOCAB
    assert tokenizer.PADDED_VOCAB == 100_352 and tokenizer.PADDED_VOCAB % 128 == 0
    assert len(enc.ranks) == 100_256 and enc.encoding.max_token_value == 100_288
    assert len(enc.special_tokens) == 32
    assert sorted(enc.special_tokens.values()) == list(range(100_257, 100_289))
    expected_order = (
        ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
        + ["<gh_stars>", "<filename>", "<issue_start>", "<issue_comment>", "<issue_closed>"]
        + ["<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>"]
        + ["<commit_before>", "<commit_msg>", "<commit_after>", "<reponame>"]
        + ["<|endofprompt|>", "<|im_start|>", "<|im_end|>", "<|pause|>"]
        + [f"<|reg{i}|>" for i in range(8)]
        + ["<|extra0|>"]
    )
    assert list(enc.special_tokens) == expected_order == list(SPECIAL_TOKEN_NAMES)
    assert enc.special_tokens["<|endofprompt|>"] == 100_276  # same id as in cl100k_base
    assert enc.eot_id == tokenizer.EOT_ID == 100_257


def test_ranks_are_cl100k_base_verified_by_sha256():
    import hashlib

    assert hashlib.sha256(cl100k_ranks_path().read_bytes()).hexdigest() == CL100K_SHA256


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_match_independent_construction(enc, released_ranks, text):
    assert enc.encode_ordinary(text) == reference_encode(text, released_ranks)
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_every_digit_is_its_own_token(enc):
    digits = "0123456789" * 3 + " 3.14159265358979 ２０２４ ٣٤٥"
    for token_id in enc.encode_ordinary(digits):
        piece = enc.decode([token_id])
        assert sum(ch.isdigit() for ch in piece) <= 1, piece
    assert len(enc.encode_ordinary("1234567890")) == 10


def test_literal_special_text_in_data_never_becomes_special(enc):
    text = "before <|endoftext|> after <|im_start|>"
    specials = set(enc.special_tokens.values())
    for ids in (enc.encode_ordinary(text), enc.encode(text), enc.encode_batch([text, text])[1]):
        assert not specials & set(ids)
        assert enc.decode(ids) == text


def test_allowed_specials_encode_to_their_ids(enc):
    assert enc.encode("a<|endoftext|>b", allowed_special="all") == [
        *enc.encode_ordinary("a"),
        100_257,
        *enc.encode_ordinary("b"),
    ]
    ids = enc.encode("<|im_start|>x<|endoftext|>", allowed_special={"<|im_start|>"})
    assert ids[0] == 100_277 and 100_257 not in ids


def test_batch_encode_equals_single_encodes(enc):
    texts = SAMPLES * 20
    assert enc.encode_batch(texts) == [enc.encode_ordinary(t) for t in texts]
    assert enc.encode_batch(texts, num_threads=1) == enc.encode_batch(texts, num_threads=3)


def test_user_arcade100k_file_loads_and_matches(enc, tmp_path):
    path = enc.save(tmp_path / tokenizer.RANKS_FILE)
    own = tokenizer.load(path)
    assert own.fingerprint == enc.fingerprint
    # A released-style file that also lists the specials after the ranks loads the same.
    with open(path, "ab") as f:
        for name, token_id in enc.special_tokens.items():
            f.write(base64.b64encode(name.encode()) + f" {token_id}\n".encode())
    tokenizer.load.cache_clear()
    assert tokenizer.load(path).encode_ordinary(SAMPLES[0]) == enc.encode_ordinary(SAMPLES[0])


def test_bad_ranks_files_are_clear_errors(enc, tmp_path):
    with pytest.raises(TokenizerFileError, match="no such ranks file"):
        tokenizer.load(tmp_path / "missing.tiktoken")
    truncated = tmp_path / "truncated.tiktoken"
    truncated.write_bytes(b"\n".join(enc.save(tmp_path / "full.tiktoken").read_bytes().splitlines()[:1000]))
    with pytest.raises(TokenizerFileError, match="expected the 100,256 ranks"):
        tokenizer.load(truncated)
    garbage = tmp_path / "garbage.tiktoken"
    garbage.write_bytes(b"not a ranks file at all\n")
    with pytest.raises(TokenizerFileError):
        tokenizer.load(garbage)


def test_changed_pinned_file_fails_the_sha256_check(tmp_path, monkeypatch):
    from tokenizer import core

    copy = tmp_path / "cl100k"
    copy.write_bytes(cl100k_ranks_path().read_bytes().replace(b" 0\n", b" 99999999\n", 1))
    monkeypatch.setattr(core, "cl100k_ranks_path", lambda: copy)
    core.load.cache_clear()
    try:
        with pytest.raises(TokenizerFileError, match="sha256"):
            core.load()
    finally:
        core.load.cache_clear()


@pytest.fixture(scope="module")
def hf_folder(enc, tmp_path_factory):
    from tokenizer.hf import export_hf

    return export_hf(enc, tmp_path_factory.mktemp("hf"))


def test_hf_export_gives_the_same_ids(enc, hf_folder):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_folder)
    for text in SAMPLES:
        # Data encoding: special-token text is plain text.
        assert hf.encode(text, add_special_tokens=False, split_special_tokens=True) == enc.encode_ordinary(
            text
        )
        # Chat / prompt encoding: special-token text is the special id.
        assert hf.encode(text, add_special_tokens=False) == enc.encode(text, allowed_special="all")
        assert hf.decode(enc.encode_ordinary(text)) == text
    assert hf.eos_token_id == hf.bos_token_id == 100_257
    assert hf.convert_tokens_to_ids(list(enc.special_tokens)) == list(enc.special_tokens.values())


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenizer", *args], input=stdin, capture_output=True)


def test_cli_encode_decode_round_trip(enc):
    text = SAMPLES[0] + " " + SAMPLES[9] + " <|endoftext|>"
    out = run_cli("encode", stdin=text.encode())
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout)
    assert ids == enc.encode_ordinary(text)
    back = run_cli("decode", stdin=json.dumps(ids).encode())
    assert back.returncode == 0 and back.stdout.decode() == text


def test_cli_rejects_bad_input():
    assert b"not valid UTF-8" in run_cli("encode", stdin=b"\xff\xfe bad").stderr
    assert b"not Arcade100k token ids" in run_cli("decode", stdin=b"[1, 100256]").stderr
    assert b"JSON list" in run_cli("decode", stdin=b"[1, ").stderr


def test_cli_errors_are_one_line_never_a_traceback(tmp_path):
    nested = run_cli("decode", stdin=b"[" * 100_000)
    assert nested.returncode == 1
    assert nested.stderr == b"error: stdin is not a JSON list of token ids (nested too deeply)\n"
    (tmp_path / "a-file").write_text("")
    for target, message in (
        ("a-file", "is a file; export-hf writes a folder"),
        ("a-file/sub", "Not a directory"),
    ):
        out = run_cli("export-hf", str(tmp_path / target))
        assert out.returncode == 1 and out.stderr.decode().startswith("error: "), out.stderr
        assert message in out.stderr.decode() and out.stderr.count(b"\n") == 1


def test_cli_info_and_export(tmp_path):
    info = json.loads(run_cli("info").stdout)
    assert info["n_vocab"] == 100_289 and info["padded_vocab"] == 100_352
    assert info["ranks_sha256"] == CL100K_SHA256 and len(info["fingerprint"]) == 64
    assert (info["engine"], info["engine_version"]) == ("fastokens", importlib.metadata.version("fastokens"))
    reference = json.loads(run_cli("--engine", "tiktoken", "info").stdout)
    assert (reference["engine"], reference["engine_version"]) == (
        "tiktoken",
        importlib.metadata.version("tiktoken"),
    )
    assert reference["fingerprint"] == info["fingerprint"]
    out = run_cli("export-hf", str(tmp_path / "tok"))
    assert out.returncode == 0, out.stderr
    assert {"tokenizer.json", "tokenizer_config.json", tokenizer.RANKS_FILE} <= {
        p.name for p in (tmp_path / "tok").iterdir()
    }


# -- the detokenizing stream (tokenizer.stream) -------------------------------------------------------


def test_text_stream_cuts_at_stop_strings_split_across_tokens(enc):
    ids = enc.encode("alpha beta gamma delta")
    stream = tokenizer.TextStream(enc, stop=["a gam", "zzz"])
    pieces, stopped = [], False
    for token in ids:
        stopped = stream.add(token)
        pieces.append(stream.take(final=stopped))
        assert "a gam" not in "".join(pieces)
        if stopped:
            break
    assert stopped and "".join(pieces) == "alpha bet"


def test_text_stream_never_splits_a_character(enc):
    text = "ok 🙂🙃 done"
    ids = enc.encode(text)
    with pytest.raises(UnicodeDecodeError):  # the premise: some token ends mid-character
        enc.decode_bytes([ids[2]]).decode("utf-8")
    stream = tokenizer.TextStream(enc, stop=[])
    pieces = []
    for token in ids:
        stream.add(token)
        pieces.append(stream.take(final=False))
    pieces.append(stream.take(final=True))
    assert "\ufffd" not in "".join(pieces) and "".join(pieces) == text
