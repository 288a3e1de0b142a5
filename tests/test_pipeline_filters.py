"""Filter rules against datatrove's implementations of the same papers, language ID, and MinHash.

Words and sentences are datatrove 0.10.1's (spaCy 3.8.18's rules): the expected tokens below are
spaCy's own output for those strings.

No Ray here: these are the pure steps that the Ray stages call.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from typing import get_args

import numpy as np
import pytest
import xxhash

from pipeline.config import (
    C4Config,
    CodeConfig,
    DataConfig,
    DedupConfig,
    FiltersConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LangIdConfig,
    ReaderName,
)
from pipeline.filters import (
    _DATA_TOKEN_RE,
    FILTERS,
    C4QualityFilter,
    CodeFilter,
    Doc,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LangIdFilter,
    _alnum_chars,
    _lines,
    build_chain,
    run_chain,
)
from pipeline.langid import identify
from pipeline.lsh import minhash
from pipeline.minhash import permutations
from pipeline.mix import copies, in_valid, mixing_rates, target_shares
from pipeline.ngrams import NGrams
from pipeline.normalize import normalize_for_dedup, normalize_unicode
from pipeline.regex_edges import alternative_texts, edge_class, suffix_reach
from pipeline.sources import READERS
from pipeline.spacy_split import LANGUAGES, RULES_PATH, WordSplitter, count_sentences, split_words, splitter

SENTENCES = [
    "The village lies on the southern bank of the river and has a small harbour.",
    "Its church was built with stone from a quarry that closed a long time ago.",
    "Farmers grow barley and potatoes in the fields that surround the old mill.",
    "A ferry connects the harbour with the island, and it runs twice a day in summer.",
    "Visitors come for the walks along the cliffs and for the fresh fish in the market.",
    "The school has about two hundred pupils, and most of them arrive by bus each morning.",
]
GOOD = "\n".join(SENTENCES)
GERMAN = (
    "Die Stadt liegt am Ufer der Weser und hat einen kleinen Hafen mit vielen Booten. "
    "Die Kirche wurde aus Steinen gebaut, die aus einem alten Steinbruch stammen. "
    "Bauern bauen Gerste und Kartoffeln auf den Feldern rund um die alte Mühle an. "
    "Eine Fähre verbindet den Hafen mit der Insel und fährt im Sommer zweimal am Tag. "
    "Besucher kommen wegen der Wanderwege an den Klippen und wegen des frischen Fisches."
)


def doc(text: str, lang: str = "en") -> Doc:
    return Doc("t/1", text, "test", lang=lang)


def quality(text: str, **overrides) -> str | None:
    return GopherQualityFilter(GopherQualityConfig(**overrides))(doc(text)).rule


def repetition(text: str) -> str | None:
    return GopherRepetitionFilter(GopherRepetitionConfig())(doc(text)).rule


def test_good_web_text_passes_every_web_filter():
    d = doc(GOOD)
    assert GopherRepetitionFilter(GopherRepetitionConfig())(d).kept
    assert GopherQualityFilter(GopherQualityConfig())(d).kept
    assert C4QualityFilter(C4Config())(d).kept


def test_gopher_quality_word_count_and_lengths():
    assert quality(SENTENCES[0]) == "gopher_short_doc"
    assert quality(GOOD, max_doc_words=20) == "gopher_long_doc"
    assert quality(" ".join(["to be or is it an so"] * 10) + " the and") == "gopher_below_avg_threshold"
    assert quality(" ".join(["internationalization"] * 60) + " the and") == "gopher_above_avg_threshold"


def test_gopher_quality_symbols_bullets_ellipsis():
    assert quality(GOOD + " #tag" * 20) == "gopher_too_many_hashes"
    assert quality(GOOD + " ..." * 12) == "gopher_too_many_ellipsis"
    bullets = "\n".join(f"- {s}" for s in SENTENCES * 2)
    assert quality(bullets) == "gopher_too_many_bullets"
    trailing = "\n".join(s.rstrip(".") + " …" for s in SENTENCES[:2]) + "\n" + "\n".join(SENTENCES[2:])
    assert quality(trailing) == "gopher_too_many_end_ellipsis"


def test_gopher_quality_alpha_ratio_counts_punctuation_tokens():
    numbers = " ".join(str(i) for i in range(40))
    assert quality(GOOD + " " + numbers) == "gopher_below_alpha_threshold"


def test_gopher_stop_words_are_case_sensitive_and_language_aware():
    capitalised = " ".join(w.capitalize() for w in GOOD.split())
    assert quality(capitalised) == "gopher_enough_stop_words"

    assert GopherQualityFilter(GopherQualityConfig())(doc(GERMAN, "de")).kept
    assert not GopherQualityFilter(GopherQualityConfig())(doc(GERMAN, "en")).kept


def test_filters_after_language_id_judge_a_dropped_document_as_the_sources_language():
    # An English source's chain drops German text for its language; `explain` still shows what the
    # later filters decide, with English words and stop words as datatrove's English filters would.
    chain = build_chain(
        FiltersConfig(langid=LangIdConfig(languages=["en"]), gopher_quality=GopherQualityConfig())
    )
    outcome = run_chain(chain, doc(GERMAN, lang=""), evaluate_all=True)
    assert outcome.rule == "wrong_language"
    assert outcome.decisions["gopher_quality"].rule == "gopher_enough_stop_words"
    culturax = build_chain(
        FiltersConfig(langid=LangIdConfig(languages=["de", "fr"]), gopher_quality=GopherQualityConfig())
    )
    assert run_chain(culturax, doc(GERMAN, lang=""), evaluate_all=True).kept


def test_gopher_repetition_rules():
    assert repetition("short text.") == "top_2_gram"  # datatrove drops very short documents this way
    assert repetition(GOOD + "\n" + "\n".join([SENTENCES[0]] * 4)) == "dup_line_frac"
    para = "\n\n".join([SENTENCES[0], SENTENCES[1], SENTENCES[0], SENTENCES[0]] + SENTENCES[2:4])
    assert repetition(para) == "dup_para_frac"
    assert repetition(" ".join(["buy cheap pills"] * 30)) == "top_2_gram"


def test_gopher_repetition_duplicated_ngrams_join_without_spaces():
    # A 5-gram of ten-letter words repeated 8 times in distinct filler: 7 greedy hits of 50 characters
    # (joined without spaces) are 15.9% of the text (> 0.15), while the top 4-gram covers 8 x 43
    # characters, 15.6% (<= 0.16): only the duplicated-5-gram rule fires.
    repeated = "abcdefghij klmnopqrst uvwxyzabcd efghijklmn opqrstuvwx "
    filler = " ".join(f"filler{i:04d}" for i in range(160))
    text = repeated * 8 + filler
    assert 344 / len(text) <= 0.16 and 350 / len(text) > 0.15
    assert repetition(text) == "duplicated_5_n_grams"


def test_c4_rewrites_text_to_kept_lines():
    lines = [
        "Home | About | Contact",
        "This site uses cookies to improve your experience.",
        "Enable JavaScript to see the map of the village.",
        "The harbour is the oldest part of the village. It was built in 1820.[1]",
        *SENTENCES[1:5],
        "Read more...",
    ]
    d = doc("\n".join(lines))
    decision = C4QualityFilter(C4Config())(d)
    kept = ["The harbour is the oldest part of the village. It was built in 1820.", *SENTENCES[1:5]]
    assert decision.kept and decision.text.splitlines() == kept
    # The chain gives the document its new text, which the filters after C4 see.
    assert run_chain([C4QualityFilter(C4Config())], d).kept and d.text.splitlines() == kept


def test_c4_page_rules():
    assert C4QualityFilter(C4Config())(doc(GOOD + "\nLorem ipsum dolor sit amet.")).rule == "lorem_ipsum"
    assert (
        C4QualityFilter(C4Config())(doc(GOOD + "\nUse it like this: f() { return 1; }.")).rule
        == "curly_bracket"
    )
    assert C4QualityFilter(C4Config())(doc("\n".join(SENTENCES[:4]))).rule == "too_few_sentences"
    assert C4QualityFilter(C4Config(min_num_sentences=4))(doc("\n".join(SENTENCES[:4]))).kept


def test_code_filter_rules():
    code = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
    f = CodeFilter(CodeConfig())
    assert f(doc(code, "code")).kept
    assert f(doc("x = 1\n" + "y = " + "1" * 1200 + "\n", "code")).rule == "max_line_length"
    assert f(doc(("# " + "-=" * 30 + "\n" + "#" + " |" * 20 + "\n") * 5, "code")).rule == "alnum_fraction"
    assert f(doc("# Code generated by protoc. DO NOT EDIT.\n" + code, "code")).rule == "autogenerated"
    assert (
        f(doc("DATA = [\n" + "".join(f"    {i * 0.37:.4f},\n" for i in range(200)) + "]\n", "code")).rule
        == "data_like"
    )


def test_code_filter_counts_match_their_plain_definitions():
    # The data-token regex is rewritten to start with one character class, and alphanumerics are counted
    # in bytes where the text is ASCII: both must count what the plain definitions count.
    plain_data = re.compile(r"0[xX][0-9a-fA-F]+|-?\d[\d.eE+-]*|\"[^\"\n]{0,20}\"")
    rng = random.Random(0)
    alphabet = '0123456789-xXaAfFeE.+"\n é١٢Ⅻ_'  # Arabic-Indic digits, a Roman numeral, an accent
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert _DATA_TOKEN_RE.findall(text) == plain_data.findall(text), text
        assert _alnum_chars(text) == sum(c.isalnum() for c in text), text


HELD_OUT = {
    "en": "The committee will meet again next week to discuss the budget for the new sports hall.",
    "de": "Der Ausschuss trifft sich nächste Woche wieder, um über das Budget der neuen Sporthalle zu reden.",
    "es": "El comité se reunirá la próxima semana para hablar del presupuesto del nuevo polideportivo.",
    "fr": "Le comité se réunira la semaine prochaine pour discuter du budget de la nouvelle salle de sport.",
    "it": "Il comitato si riunirà la prossima settimana per discutere il bilancio della nuova palestra.",
    "nl": "De commissie komt volgende week weer bijeen om de begroting van de nieuwe sporthal te bespreken.",
    "pt": "A comissão volta a reunir-se na próxima semana para discutir o orçamento do novo pavilhão.",
    "pl": "Komisja spotka się ponownie w przyszłym tygodniu, aby omówić budżet nowej hali sportowej.",
    "fi": "Toimikunta kokoontuu uudelleen ensi viikolla keskustelemaan uuden urheiluhallin budjetista.",
}


@pytest.mark.parametrize("lang", sorted(HELD_OUT))
def test_langid_recognises_languages_and_drops_out_of_scope(lang):
    f = LangIdFilter(LangIdConfig(languages=["en", "de", "es", "fr", "it", "nl", "pt"]))
    d = doc(HELD_OUT[lang], lang="")
    decision = f(d)
    assert d.lang == lang and d.lang_score > 0.65
    assert decision.kept == (lang not in ("pl", "fi"))
    assert decision.rule == (None if decision.kept else "wrong_language")


def test_langid_reads_text_as_datatrove_hands_it_to_fasttext():
    # Line breaks become spaces; a no-break space stays inside its word (fastText splits at ASCII
    # whitespace only), so three of them lower the score below the threshold, as in datatrove.
    text = HELD_OUT["en"]
    assert identify(text.replace(" ", "\n", 3)) == identify(text)
    lang, score = identify(text.replace(" ", "\u00a0", 3))
    assert lang == "en" and score < 0.65 < identify(text)[1]


def test_minhash_estimates_jaccard_of_word_5grams():
    cfg = DedupConfig()
    base = " ".join(SENTENCES * 2)
    edited = base.replace("harbour", "port", 1)
    a, b = normalize_for_dedup(base), normalize_for_dedup(edited)
    sh = [{" ".join(w[i : i + 5]) for i in range(len(w) - 4)} for w in (a.split(), b.split())]
    jaccard = len(sh[0] & sh[1]) / len(sh[0] | sh[1])
    agreement = float(np.mean(minhash(a, cfg) == minhash(b, cfg)))
    assert abs(agreement - jaccard) < 0.1
    other = normalize_for_dedup(" ".join(reversed(SENTENCES)) + " " + HELD_OUT["en"])
    assert np.mean(minhash(a, cfg) == minhash(other, cfg)) < 0.6


def test_minhash_is_the_definition_over_distinct_shingles():
    """xxHash64 of each word 5-gram, (a*x + b) mod 2^61-1 with the product wrapping at 2^64, the minimum
    over the 5-grams: computed with the xxhash package and Python integers, over words of every UTF-8
    length (xxHash64 reads 32-, 8-, 4- and 1-byte pieces), repeated 5-grams, and texts shorter than one."""
    cfg = DedupConfig()
    rng = random.Random(3)
    letters = "abcdefghijklmnopqrstuvwxyzéßü中文"
    words = ["".join(rng.choices(letters, k=rng.randrange(1, 16))) for _ in range(300)]
    a, b = (v.tolist() for v in permutations(cfg.bands * cfg.rows, cfg.seed))
    p, wrap = (1 << 61) - 1, (1 << 64) - 1
    for text in (" ".join(words + words[:50]), "", "one", "two words", "a b c d", "a b c d e"):
        tokens = text.split()
        grams = {" ".join(tokens[i : i + 5]) for i in range(max(1, len(tokens) - 4))}
        x = [xxhash.xxh64_intdigest(g.encode()) for g in grams]
        expected = [min(((ai * xi + bi) & wrap) % p for xi in x) for ai, bi in zip(a, b, strict=True)]
        assert minhash(text, cfg).tolist() == expected, text[:40]


def test_normalize_for_dedup_ascii_path_is_the_unicode_path():
    rng = random.Random(5)
    ascii_chars = [chr(i) for i in range(128)]
    texts = ["".join(ascii_chars), *("".join(rng.choices(ascii_chars, k=200)) for _ in range(200))]
    texts += ["Ünïcödé ½ text — with «marks» and ٣ digits", GOOD, HELD_OUT["en"]]
    for text in texts:
        assert normalize_for_dedup(text) == normalize_unicode(text)


def test_validation_and_mixing_draws_are_deterministic_and_calibrated():
    ids = [f"src/file#{i}" for i in range(20000)]
    held = [i for i in ids if in_valid(i, 0.05)]
    assert held == [i for i in ids if in_valid(i, 0.05)]
    assert 0.04 < len(held) / len(ids) < 0.06
    assert np.mean([copies(i, 2.3, seed=7) for i in ids]) == pytest.approx(2.3, abs=0.02)
    assert np.mean([copies(i, 0.25, seed=7) for i in ids]) == pytest.approx(0.25, abs=0.02)
    assert [copies(i, 0.5, seed=7) for i in ids[:50]] != [copies(i, 0.5, seed=8) for i in ids[:50]]


def test_readers_take_fsspec_urls_and_native_formats():
    """The readers go through fsspec, so a URL reads like a local path (memory:// stands in for s3://)."""
    import fsspec
    import zstandard

    from pipeline.config import SourceConfig
    from pipeline.sources import BadRow, expand_paths, read_file

    rows = [{"text": GOOD, "meta": {"pile_set_name": "Pile-CC"}}, {"text": 7, "meta": {}}]
    raw = "".join(json.dumps(r) + "\n" for r in rows).encode() + b'{"text": "cut\n'
    with fsspec.open("memory://corpus/train/00.jsonl.zst", "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(raw))
    files, missing = expand_paths(["memory://corpus/train/*.jsonl.zst", "memory://corpus/none/*.jsonl"])
    assert files == ["memory:///corpus/train/00.jsonl.zst"]
    assert missing == [("memory://corpus/none/*.jsonl", "no file matches")]
    cfg = SourceConfig(reader="pile", paths=files, epochs=1)
    items = list(read_file("pile", files[0], cfg))
    assert items[0].id == "pile/train/00.jsonl.zst#0" and items[0].meta == {
        "meta": {"pile_set_name": "Pile-CC"}
    }
    assert [(b.row, b.reason.split(":")[0]) for b in items[1:] if isinstance(b, BadRow)] == [
        (1, "wrong schema"),
        (2, "malformed json"),
    ]


def test_filter_order_and_reader_table_are_defined_once():
    # Every config section has its filter, and the chain runs in the order of FiltersConfig's fields.
    assert list(FILTERS) == list(FiltersConfig.model_fields)
    sections = FiltersConfig(code=CodeConfig(), langid=LangIdConfig(languages=["en"]), c4=C4Config())
    assert [f.name for f in build_chain(sections)] == ["langid", "c4", "code"]
    # The config accepts exactly the readers of the table.
    assert set(get_args(ReaderName)) == set(READERS)
    assert [name for name, r in READERS.items() if r.is_code] == ["starcoder"]


def test_target_shares_and_rates_agree():
    sources = {
        name: {"reader": "pile", "paths": ["unused"], "weight": weight}
        for name, weight in (("a", 3.0), ("b", 1.0), ("empty", 4.0))
    }
    cfg = DataConfig.model_validate({"sources": sources, "total_tokens": 1000})
    tokens = {"a": 200, "b": 2000, "empty": 0}
    # A source without train tokens gets no share, and the others share its weight.
    assert target_shares(cfg, tokens) == {"a": 0.75, "b": 0.25, "empty": 0.0}
    rates = mixing_rates(cfg, tokens)
    assert {n: tokens[n] * rates[n] for n in tokens} == pytest.approx({"a": 750, "b": 250, "empty": 0})
    # Before the train tokens are counted (pack without stats.json): the configured weights.
    assert target_shares(cfg) == {"a": 0.375, "b": 0.125, "empty": 0.5}


def test_english_words_follow_spacy_affixes_exceptions_and_urls():
    text = "See e.g. foo.bar() and don't -- it's (#12) fine: https://x.org/a."
    assert split_words(text) == [
        "See", "e.g.", "foo.bar", "(", ")", "and", "do", "n't", "--", "it", "'s",
        "(", "#", "12", ")", "fine", ":", "https://x.org/a", ".",
    ]  # fmt: skip


def test_words_use_the_documents_language():
    french = "Je l'ai vu aujourd'hui, c'est-à-dire porte-monnaie."
    assert split_words(french, "fr") == [
        "Je", "l'", "ai", "vu", "aujourd'hui", ",", "c'", "est", "-", "à", "-", "dire", "porte-monnaie", ".",
    ]  # fmt: skip
    assert "porte-monnaie" not in split_words(french, "en")
    assert split_words("Nell'anno dell'Italia c'era", "it") == [
        "Nell'",
        "anno",
        "dell'",
        "Italia",
        "c'",
        "era",
    ]
    assert split_words("Die Kosten, z.B. für Strom, steigen um 5%.", "de") == [
        "Die", "Kosten", ",", "z.B.", "für", "Strom", ",", "steigen", "um", "5", "%", ".",
    ]  # fmt: skip
    # A language without rules of its own gets English's, as datatrove's default.
    assert split_words("don't", "sv") == split_words("don't", "en") == ["do", "n't"]


def test_sentences_follow_spacy_sentencizer():
    # Abbreviations are one token, so their periods end nothing; "..." is not sentence punctuation.
    assert count_sentences("See e.g. the U.S. rules. Then go.") == 2
    assert count_sentences("Wait... what? Yes!! No") == 3
    # An infix period between a lowercase and an uppercase letter splits the word and the sentence.
    assert count_sentences("It ended.Next came more") == 2
    assert count_sentences("(Done.) Next one") == 2
    assert count_sentences("") == 0


def test_c4_counts_sentences_like_spacy():
    # Five lines of one sentence each, two of them with abbreviations a period regex would split on.
    lines = [*SENTENCES[:3], "The mill, e.g. the old one, is a museum.", "The U.S. visitors come in May."]
    assert C4QualityFilter(C4Config(min_num_sentences=6))(doc("\n".join(lines))).rule == "too_few_sentences"
    assert C4QualityFilter(C4Config(min_num_sentences=5))(doc("\n".join(lines))).kept


def test_symbol_words_include_sentence_terminals():
    # "‼" is punctuation to datatrove (its sentence terminals), so it is not a word of the 50 needed.
    words = " ".join(GOOD.split()[:49])
    assert GopherQualityFilter(GopherQualityConfig())(doc(words + " the and ‼")).kept
    assert GopherQualityFilter(GopherQualityConfig())(doc(" ".join(GOOD.split()[:48]) + " ‼ the")).rule == (
        "gopher_short_doc"
    )


def test_alpha_ratio_counts_spacy_tokens():
    # spaCy keeps "foo.bar" and "e.g." whole: a changelog line of dotted names stays alphabetic.
    entries = "\n".join(
        f"Fixed module{i}.handler() and the cache.store e.g. in v{i}.0 with care" for i in range(8)
    )
    d = Doc("t/1", entries, "test", lang="en")
    alpha = sum(any(c.isalpha() for c in w) for w in d.words) / len(d.words)
    assert alpha >= 0.8
    assert GopherQualityFilter(GopherQualityConfig())(d).rule != "gopher_below_alpha_threshold"


def test_zero_threshold_turns_a_rule_off_as_in_datatrove():
    repeated = GOOD + "\n" + "\n".join([SENTENCES[0]] * 4)
    assert GopherRepetitionFilter(GopherRepetitionConfig())(doc(repeated)).rule == "dup_line_frac"
    off = GopherRepetitionConfig(dup_line_frac=0, dup_line_char_frac=0, dup_para_frac=0, dup_para_char_frac=0)
    # The text still repeats its 5-grams; only the line and paragraph rules are off.
    assert GopherRepetitionFilter(off)(doc(repeated)).rule == "duplicated_5_n_grams"
    bullets = "\n".join(f"- {s}" for s in SENTENCES * 2)
    assert GopherQualityFilter(GopherQualityConfig())(doc(bullets)).rule == "gopher_too_many_bullets"
    assert GopherQualityFilter(GopherQualityConfig(max_bullet_lines_ratio=0))(doc(bullets)).kept


def test_culturax_languages_use_fineweb2_stop_words():
    # "ist", "zu" and "nicht" are frequent German words but not FineWeb-2's stop words; "die" and "für" are.
    body = " ".join(["Haus", "Garten", "Strasse", "Fenster", "Dach"] * 10)
    assert GopherQualityFilter(GopherQualityConfig())(doc(body + " ist zu nicht", "de")).rule == (
        "gopher_enough_stop_words"
    )
    assert GopherQualityFilter(GopherQualityConfig())(doc(body + " die für", "de")).kept


def test_rules_file_covers_every_language_from_one_spacy():
    rules = json.loads(gzip.decompress(RULES_PATH.read_bytes()))
    assert set(rules["languages"]) == set(LANGUAGES)
    assert f"spacy=={rules['spacy']}" in rules["pins"]


def test_word_shortcuts_agree_with_the_full_rules():
    # Plain words (and a word with one closing mark) skip the affix rules; on every chunk of the sample
    # corpus, in every language's rules, the shortcut gives what the rules give.
    from harness.sample import sample_texts

    chunks = {c for source, text in sample_texts() if source != "starcoder" for c in text.split()}
    for lang in LANGUAGES:
        rules = splitter(lang)
        short = {c: rules._simple_tokens(c) for c in chunks}
        assert sum(t is not None for t in short.values()) > len(chunks) / 2
        assert {c: t for c, t in short.items() if t is not None and t != rules.chunk_tokens(c)} == {}
        # The edge-character prechecks that skip the affix regexes, and the suffix search limited to
        # the alternatives that can end in the chunk's last character and to the chunk's tail, change no
        # chunk's tokens either.
        assert len(rules.suffix_index.parts) > 50 and len(rules.infix_index.parts) > 4
        full = WordSplitter(lang)
        full.prefix_first = full.infix_first = None
        full._suffix = full.find_suffix
        rest = [c for c, t in short.items() if t is None]
        assert [c for c in rest if rules.chunk_tokens(c) != full.chunk_tokens(c)] == []


def test_edge_class_bounds_what_a_match_can_start_or_end_with():
    ends = edge_class(r"(?<=[0-9])(?:km|mi)$|\.\.+$|[x-z]?c$", last=True, anchored=True)
    assert {c for c in "kmi.xyzc9a" if ends.fullmatch(c)} == {"m", "i", ".", "c"}
    starts = edge_class(r"^US\$|^[x-z]?c|^\.\.+", last=False, anchored=True)
    assert {c for c in "USxyzc.$a" if starts.fullmatch(c)} == {"U", "x", "y", "z", "c", "."}
    # An alternative not anchored at the chunk's edge may match inside it: no bound at that edge.
    assert edge_class(r"^US\$|[x-z]?c", last=False, anchored=True) is None
    assert edge_class(r"^US\$|[x-z]?c", last=False) is not None
    # No bound: a category, a match that can be empty, a case-insensitive pattern.
    assert edge_class(r"\d+$", last=True) is None
    assert edge_class(r"a?$", last=True) is None
    assert edge_class(r"(?i)a$", last=True) is None


def test_alternatives_are_split_where_the_parser_splits_them():
    assert alternative_texts(r"a|[|\]]b|(c|d)|\||[]|]$|[^]x]") == [
        "a",
        r"[|\]]b",
        "(c|d)",
        r"\|",
        "[]|]$",
        "[^]x]",
    ]
    # A global flag would stay with the first alternative; a group reference would lose its group.
    assert alternative_texts("(?i)a|b") == ["(?i)a|b"]
    assert alternative_texts(r"(a)|\1") == [r"(a)|\1"]


def test_suffix_reach_bounds_where_a_suffix_starts():
    reach, long_last = suffix_reach(r"(?<=[0-9])(?:km|mi)$|\.\.+$|[x-z]?c$|'s$")
    assert reach == 2 and {c for c in ".ckms" if long_last.fullmatch(c)} == {"."}
    assert suffix_reach(r"(?<=[0-9])km$|c$") == (2, None)
    # Unanchored, or an unbounded alternative that can end in any character: no bound.
    assert suffix_reach(r"km$|c") == (None, None)
    assert suffix_reach(r"km$|\w+$") == (None, None)


def top_ngram_chars(words: list[str], n: int) -> int:
    """datatrove's `find_top_duplicate` on `get_n_grams(words, n)`."""
    gram, count = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)).most_common(1)[0]
    return len(gram) * count


def duplicated_ngram_chars(words: list[str], n: int) -> int:
    """datatrove's `find_all_duplicate`."""
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i : i + n])
        if gram in seen:
            chars, i = chars + len(gram), i + n
        else:
            seen.add(gram)
            i += 1
    return chars


def test_ngram_measures_are_datatroves():
    # Few short words, so that n-grams repeat and distinct n-grams join to one string ("ab c", "a bc");
    # non-ASCII ones (2- and 4-byte UTF-8, a lone surrogate) count as one character each.
    rng = np.random.default_rng(0)
    vocabulary = ["a", "b", "ab", "c", "bc", "abc", "é", "\U0001f600", "\ud800"]
    for _ in range(1500):
        words = [str(w) for w in rng.choice(vocabulary, size=rng.integers(0, 80))]
        ngrams = NGrams(words)
        for n in range(1, 5):
            if len(words) >= n:
                assert ngrams.top_chars(n) == top_ngram_chars(words, n), (words, n)
        for n in (1, 2, 5, 6, 7, 10):
            assert ngrams.duplicated_chars(n) == duplicated_ngram_chars(words, n), (words, n)


def test_lines_are_the_regex_split():
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(["a", "b c", "\n", "\n", "\r", " "]) for _ in range(rng.randint(0, 12)))
        assert _lines(text) == re.split(r"\n+", text), text
