"""python -m tokenizer {encode,decode,export-hf,info}: Arcade100k from the command line.

echo "text" | python -m tokenizer encode      # JSON list of ids, as the pipeline encodes a document
echo "[9906, 1917]" | python -m tokenizer decode
python -m tokenizer export-hf DIR              # a folder AutoTokenizer.from_pretrained loads
python -m tokenizer info                       # vocabulary facts, hashes, encoding engine
python -m tokenizer --engine tiktoken encode   # any command on a given engine (default: auto)

export-hf writes DIR where nothing is, into an empty folder, or over an earlier export-hf's folder;
never over a file or a folder holding other files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from common.files import OutputPathError, check_output_folder, publish_folder, temporary_path
from tokenizer.core import (
    CL100K_SHA256,
    PADDED_VOCAB,
    Arcade100k,
    TokenizerFileError,
    cl100k_ranks_path,
    load,
)
from tokenizer.engines import ENGINE_CHOICES, TokenizerEngineError


def encode(enc: Arcade100k, _: argparse.Namespace) -> None:
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as e:
        sys.exit(f"error: stdin is not valid UTF-8 ({e})")
    json.dump(enc.encode_ordinary(text), sys.stdout)
    sys.stdout.write("\n")


def decode(enc: Arcade100k, _: argparse.Namespace) -> None:
    try:
        ids = json.loads(sys.stdin.read())
    except json.JSONDecodeError as e:
        sys.exit(f"error: stdin is not a JSON list of token ids ({e})")
    except RecursionError:  # json parses nested arrays recursively
        sys.exit("error: stdin is not a JSON list of token ids (nested too deeply)")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        sys.exit("error: stdin must be a JSON list of integers")
    specials = set(enc.special_tokens.values())
    if bad := [i for i in ids if not (0 <= i < len(enc.ranks) or i in specials)]:
        sys.exit(f"error: not Arcade100k token ids: {bad[:10]}")
    sys.stdout.buffer.write(enc.decode_bytes(ids))
    sys.stdout.flush()


def export_hf(enc: Arcade100k, args: argparse.Namespace) -> None:
    """Build the folder beside DIR and publish it by rename. An existing DIR is replaced only when it
    holds nothing but files of the names export-hf writes (an earlier export)."""
    folder = args.dir
    if folder.exists() and not folder.is_dir():
        sys.exit(f"error: {folder} is a file; export-hf writes a folder")
    from tokenizer.hf import export_hf as export  # transformers is slow to import; only here

    tmp = temporary_path(folder)
    try:
        export(enc, tmp)
        written = {path.name for path in tmp.iterdir()}
        check_output_folder(folder, lambda f: _holds_only(f, written), "the files export-hf writes")
        publish_folder(tmp, folder, replace=True)
    except OutputPathError as e:
        sys.exit(f"error: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the export failed
    print(f"wrote a Hugging Face tokenizer to {folder} (load it with AutoTokenizer.from_pretrained)")


def _holds_only(folder: Path, names: set[str]) -> bool:
    return all(path.is_file() and not path.is_symlink() and path.name in names for path in folder.iterdir())


def info(enc: Arcade100k, args: argparse.Namespace) -> None:
    facts = enc.info()
    if args.ranks is None:
        facts["ranks_file"] = str(cl100k_ranks_path())
        facts["ranks_sha256"] = CL100K_SHA256
    else:
        facts["ranks_file"] = str(args.ranks)
    facts["padded_vocab"] = PADDED_VOCAB
    json.dump(facts, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ranks", type=Path, help="an arcade100k.tiktoken file (default: the pinned cl100k_base)"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="auto",
        help="the encoder (default: fastokens if it passes its self-check)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("encode", help="UTF-8 text on stdin -> JSON ids on stdout (no special tokens)")
    commands.add_parser("decode", help="JSON ids on stdin -> text on stdout")
    commands.add_parser("export-hf", help="write a Hugging Face tokenizer folder").add_argument(
        "dir", type=Path
    )
    commands.add_parser("info", help="vocabulary facts, hashes and the encoding engine with its version")
    args = parser.parse_args(argv)
    try:
        enc = load(args.ranks, args.engine)
    except (TokenizerFileError, TokenizerEngineError) as e:
        sys.exit(f"error: {e}")
    command = {"encode": encode, "decode": decode, "export-hf": export_hf, "info": info}[args.command]
    try:
        command(enc, args)
    except OSError as e:  # a folder that cannot be written, a closed pipe: one line, as every error here
        sys.exit(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}")


if __name__ == "__main__":
    main()
