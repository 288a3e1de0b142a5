"""The benchmark corpus: real text in which no document repeats, since a tokenizer's caches make a
document seen before encode faster than a new one.

`documents` gives the bundled sample's documents (multilingual prose, code), then prose (text files
under /usr/share/doc, gzipped ones too, /usr/share/common-licenses, the docs that packages ship) and
Python sources (the installed packages, the standard library) in turn, in a fixed order, each text
once: several hundred MB on any machine with `make setup`. `salted_documents` walks the same files
without end, each line salted by its document, for measurements that need more text than that.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import string
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.sample import sample_texts

PACKAGES = Path(sysconfig.get_paths()["purelib"])
STDLIB = Path(sysconfig.get_paths()["stdlib"])
PROSE = (
    (Path("/usr/share/doc"), "*"),
    (Path("/usr/share/common-licenses"), "*"),
    *((PACKAGES, f"*.{ext}") for ext in ("md", "rst", "txt")),
)
CODE = ((PACKAGES, "*.py"), (STDLIB, "*.py"))
# Salts: every two-letter word, so that a salted line starts with a word its document alone has.
_LINE_SALTS = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2)]


def _sample_documents() -> Iterator[str]:
    return (text for _, text in sample_texts())


def _text_files(places: Iterable[tuple[Path, str]]) -> Iterator[str]:
    """The UTF-8 text of every file matching under each folder, gunzipped; binary files are skipped."""
    for folder, pattern in places:
        for path in sorted(folder.rglob(pattern)):
            if not path.is_file() or path.is_symlink():
                continue
            raw = path.read_bytes()
            if path.suffix == ".gz":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError):
                    continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text and "\x00" not in text:
                yield text


def distinct(texts: Iterable[str]) -> Iterator[str]:
    """`texts` without empty ones and without any text seen before (licenses recur under every package)."""
    seen: set[bytes] = set()
    for text in texts:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if text and digest not in seen:
            seen.add(digest)
            yield text


def _interleaved(prose: Iterator[str], code: Iterator[str], prose_share: float) -> Iterator[str]:
    """Prose while it is under `prose_share` of the bytes so far (or code has run out), else code."""
    sizes = {"prose": 0, "code": 0}
    streams = {"prose": prose, "code": code}
    while streams:
        total = sum(sizes.values())
        kind = "prose" if sizes["prose"] <= prose_share * total else "code"
        if kind not in streams:
            kind = next(iter(streams))
        text = next(streams[kind], None)
        if text is None:
            del streams[kind]
            continue
        sizes[kind] += len(text.encode())
        yield text


def all_documents(prose_share: float = 0.5) -> Iterator[str]:
    """Every distinct document, the sample's first, then prose and code in turn at `prose_share`."""
    mixed = _interleaved(_text_files(PROSE), _text_files(CODE), prose_share)
    return distinct(itertools.chain(_sample_documents(), mixed))


def documents(min_mb: float = 20.0, prose_share: float = 0.5) -> list[str]:
    """The first `all_documents` that make at least `min_mb` MB; an error if this machine has fewer."""
    target, size, docs = int(min_mb * 1e6), 0, []
    for doc in all_documents(prose_share):
        docs.append(doc)
        size += len(doc.encode())
        if size >= target:
            return docs
    raise SystemExit(f"only {size / 1e6:.0f} MB of distinct text on this machine, fewer than {min_mb} MB")


def salted_documents() -> Iterator[str]:
    """`all_documents`, pass after pass without end, the n-th document's lines each prefixed with a
    word of its own (n in letters, then two letters by line): no two documents are equal and new
    words keep coming, as in a real corpus. Nothing is kept in memory but the hashes of one pass."""
    passes = itertools.chain.from_iterable(all_documents() for _ in itertools.count())
    for n, text in enumerate(passes):
        yield _salted(text, n)


def _salted(text: str, n: int) -> str:
    word = _letters(n)
    return "\n".join(
        f"{word}{_LINE_SALTS[i % len(_LINE_SALTS)]} {line}" for i, line in enumerate(text.split("\n"))
    )


def _letters(n: int) -> str:
    """`n` in base 26 written with the letters a-z (digits would each be a token of their own)."""
    letters = []
    while True:
        n, r = divmod(n, 26)
        letters.append(string.ascii_lowercase[r])
        if not n:
            return "".join(letters)


def megabytes(docs: list[str]) -> float:
    return sum(len(d.encode()) for d in docs) / 1e6
