"""The stop words of the Gopher quality filter, per language."""

from __future__ import annotations

# Gopher's eight English stop words; for the CulturaX languages, FineWeb-2's lists
# (huggingface/fineweb-2 configs/{deu,spa,fra,ita,nld,por}_Latn.yml).
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"the", "be", "to", "of", "and", "that", "have", "with"}),
    "de": frozenset("der und die in von im den des mit das er dem als wurde für".split()),
    "es": frozenset("de la en el y a que del los se por un con una las su".split()),
    "fr": frozenset("de la le et à en l' des du les est d' un une il dans par au".split()),
    "it": frozenset("di e il la in a del che è della un per nel l' con da i una".split()),
    "nl": frozenset("de van in het een en is op voor met door zijn werd hij uit".split()),
    "pt": frozenset("de a e o em do da que um no uma com para na é foi".split()),
}


def stop_words(lang: str) -> frozenset[str]:
    return STOP_WORDS.get(lang, STOP_WORDS["en"])
