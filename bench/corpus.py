"""The benchmark corpus: real text in which no document repeats, since a tokenizer's caches make a
document seen before encode faster than a new one.

`documents` gives the bundled sample's documents (multilingual prose, code), then prose (text files
under /usr/share/doc, gzipped ones too, /usr/share/common-licenses, the docs that packages ship) and
Python sources (the installed packages, the standard library) in turn, in a fixed order, each text
once: several hundred MB on any machine with `make setup`. `salted_documents` walks the same files
without end, each line salted by its document, for measurements that need more text than that.
`real_documents(lang)` gives real text by language (English and the six CulturaX languages): man
pages rendered by groff, message catalogues' translations, and for English the prose above.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import string
import struct
import subprocess
import sysconfig
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


# Real text by language: English and the six CulturaX languages, from what Debian-based machines ship.
REAL_LANGUAGES = ("en", "de", "es", "fr", "it", "nl", "pt")
MAN = Path("/usr/share/man")
LOCALE = Path("/usr/share/locale")
# A message catalogue becomes documents of about this many characters (its messages, one a line).
CATALOGUE_DOC_CHARS = 4000


def _language_folders(root: Path, lang: str) -> list[Path]:
    """`root`/`lang` and its regional variants (pt and pt_BR), for a language other than English."""
    return sorted(p for p in root.glob(f"{lang}*") if p.name == lang or p.name.startswith(f"{lang}_"))


def _render_man(path: Path) -> str:
    """One man page as plain UTF-8 text: groff without hyphenation, justification or overstrikes."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    cmd = ["groff", "-k", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-dAD=l"]
    done = subprocess.run(cmd, input=raw, capture_output=True, check=False)
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else ""


def _man_files(lang: str) -> list[Path]:
    if lang == "en":
        folders = sorted(MAN.glob("man[1-8]"))
    else:
        folders = [f for folder in _language_folders(MAN, lang) for f in sorted(folder.glob("man[1-8]"))]
    return [p for folder in folders for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()]


def _catalogue_files(lang: str) -> list[Path]:
    return [
        p for folder in _language_folders(LOCALE, lang) for p in sorted((folder / "LC_MESSAGES").glob("*.mo"))
    ]


def real_sources(lang: str) -> dict[str, int]:
    """How many files of each kind this machine has for `real_documents(lang)`."""
    counts = {"man pages": len(_man_files(lang)) if shutil.which("groff") else 0}
    if lang == "en":
        counts["prose files"] = sum(
            1 for folder, pattern in PROSE for p in folder.rglob(pattern) if p.is_file()
        )
    else:
        counts["catalogues"] = len(_catalogue_files(lang))
    return counts


def man_pages(lang: str) -> Iterator[str]:
    """The man pages written in `lang`, rendered to text, in a fixed order; none without groff."""
    if shutil.which("groff") is None:
        return
    paths = _man_files(lang)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        # In slices, so that a caller that stops early does not render every page.
        for start in range(0, len(paths), 64):
            yield from (text for text in pool.map(_render_man, paths[start : start + 64]) if text.strip())


def _catalogue_messages(path: Path) -> list[str]:
    """The translated messages of a GNU .mo catalogue, plural forms apart, without its header."""
    data = path.read_bytes()
    order = "<" if data[:4] == b"\xde\x12\x04\x95" else ">"
    count, originals, translations = struct.unpack(f"{order}3I", data[8:20])
    messages = []
    for i in range(count):
        msgid_length = struct.unpack_from(f"{order}I", data, originals + 8 * i)[0]
        length, offset = struct.unpack_from(f"{order}2I", data, translations + 8 * i)
        if msgid_length:  # the empty msgid is the catalogue's header
            text = data[offset : offset + length].decode("utf-8", "replace")
            messages.extend(m for m in text.split("\x00") if m.strip())
    return messages


def catalogue_documents(lang: str) -> Iterator[str]:
    """The translations that programs ship for `lang` (/usr/share/locale/LANG*/LC_MESSAGES/*.mo), each
    catalogue cut into documents of about CATALOGUE_DOC_CHARS characters."""
    for path in _catalogue_files(lang):
        doc: list[str] = []
        size = 0
        for message in _catalogue_messages(path):
            doc.append(message)
            size += len(message) + 1
            if size >= CATALOGUE_DOC_CHARS:
                yield "\n".join(doc)
                doc, size = [], 0
        if doc:
            yield "\n".join(doc)


def real_documents(lang: str) -> Iterator[str]:
    """Distinct real (not generated) documents written in `lang`: for English the prose that packages
    ship (docs, licences, READMEs) and man pages, for the others their man pages and the translations
    in message catalogues, the two sources in turn. Nothing is downloaded; what a machine lacks is
    skipped."""
    if lang == "en":
        return distinct(_round_robin(_text_files(PROSE), man_pages("en")))
    return distinct(_round_robin(man_pages(lang), catalogue_documents(lang)))


def _round_robin(*streams: Iterator[str]) -> Iterator[str]:
    """One item of each stream in turn, until all run out."""
    live = list(streams)
    while live:
        for stream in list(live):
            item = next(stream, None)
            if item is None:
                live.remove(stream)
            else:
                yield item
