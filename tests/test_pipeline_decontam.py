"""The decontamination stage: n-gram keys of eval documents, a contaminated corpus built here, resume."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.config import ConfigError
from evaluation.documents import write_documents
from harness.stages import run_in_process
from pipeline.config import DecontamConfig
from pipeline.decontam import DECONTAM, EvalNgrams, decontam_stage, drop_stale, eval_ngrams, normalize_words
from pipeline.eval_documents import EvalDocuments, read_eval_documents, write_eval_documents
from pipeline.normalize import PUNCTUATION_RE
from pipeline.plan import Partition
from pipeline.storage import FILTERED_SCHEMA, write_table
from pipeline.workdir import WorkDir

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ROOT / "data" / "eval" / "stablelm2_gen"
LONG = (
    "Which of the following gases makes up most of the atmosphere of the Earth at sea level "
    "on a clear day? Nitrogen"
)


def keys(*docs: tuple[str, str], ngram: int = 13) -> EvalNgrams:
    ngrams = EvalNgrams(ngram)
    for task, text in docs:
        ngrams.add(task, text)
    return ngrams.freeze()


def test_thirteen_word_windows_and_short_items_whole():
    ngrams = keys(("science", LONG), ("capitals", "La capitale de la France est Paris"))
    # 13 consecutive words of the long item, with other case, punctuation and spacing around.
    quoted = "Quiz night!\n\nQ: what GASES makes up most of the atmosphere -- of the Earth at sea level?"
    thirteen = "gases makes up most of the atmosphere of the earth at sea level"
    assert ngrams.first_match(quoted) == ("science", thirteen)
    # 12 consecutive words are not enough.
    assert ngrams.first_match("what gases makes up most of the atmosphere of the earth at sea, yes") is None
    # A short item matches whole, whatever the punctuation (« » ¿ ¡ deleted as lm-eval deletes '?').
    assert ngrams.first_match("« La capitale de la France est... Paris ! »") == (
        "capitals",
        "la capitale de la france est paris",
    )
    # The same words with one inserted, or in another order, share no key.
    assert ngrams.first_match("La capitale de la France, comme chacun sait, est Paris.") is None
    assert ngrams.first_match("Paris est la capitale de la France.") is None
    assert ngrams.first_match("") is None
    # The first match in the text names the task.
    both = "la capitale de la france est paris " + LONG
    assert ngrams.first_match(both)[0] == "capitals"
    assert keys(("science", LONG)).fingerprint != keys(("science", LONG), ngram=8).fingerprint


def _partition(work: WorkDir, texts: list[str]) -> Partition:
    part = Partition("00000-web", 0, "web", "in.parquet")
    docs = {
        "id": [f"web/in.parquet#{i}" for i in range(len(texts))],
        "text": texts,
        "source": ["web"] * len(texts),
        "lang": ["en"] * len(texts),
        "meta": ["{}"] * len(texts),
        "lang_score": [1.0] * len(texts),
        "n_tokens": [len(t.split()) for t in texts],
    }
    write_table(work.train(part.pid), pa.table(docs, schema=FILTERED_SCHEMA))
    return part


@pytest.mark.slow
def test_contaminated_corpus_is_split_counted_and_resumed(tmp_path, capsys):
    """A corpus built here from the bundled tasks' test items; lm-eval's own task without data on this
    machine is named in one warning line."""
    tasks, documents = ["stablelm2_gen", "arc_challenge"], tmp_path / "eval_documents.jsonl"
    write_documents(tasks, documents)
    ngrams = eval_ngrams(DecontamConfig(tasks=tasks, documents=str(documents)))
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "arc_challenge" in warnings[0]
    assert ngrams.missing == ["arc_challenge"]
    languages = ("en", "de", "es", "fr", "it", "nl", "pt")
    assert set(ngrams.items) == {f"stablelm2_gen_{lang}" for lang in languages}

    items = [json.loads(line) for lang in ("en", "fr") for line in _test_items(lang)[:5]]
    page = "The town hall opened in 1850 and the market square still hosts a fair every summer."
    quoted = [f"{page}\n\nOur quiz: {x['question']} {x['answer']}. {page}" for x in items[:10]]
    look_alikes = [f"{page} {x['question']} I think that {x['answer']} is right." for x in items[:10]]
    texts = [*quoted, *look_alikes, page]
    work = WorkDir(tmp_path)
    part = _partition(work, texts)
    stage = decontam_stage(work, [part], ngrams)
    run_in_process(stage)

    removed = pq.read_table(work.contaminated(part.pid)).to_pylist()
    assert [r["id"] for r in removed] == [f"web/in.parquet#{i}" for i in range(10)]
    assert {r["reason"] for r in removed} == {DECONTAM}
    assert {r["rule"] for r in removed} == {"stablelm2_gen_en", "stablelm2_gen_fr"}
    assert all(r["ngram"] in " ".join(normalize_words(r["text"])) for r in removed)
    kept = pq.read_table(work.decontaminated(part.pid))
    assert kept.column("text").to_pylist() == texts[10:]
    stats = json.loads(work.stats(DECONTAM, part.pid).read_text())
    assert stats[DECONTAM]["docs"] == 11 and sum(stats["contaminated"].values()) == 10

    assert stage.todo() == []  # a finished partition is not run again
    drop_stale(work, [part.pid], ngrams.fingerprint)
    assert work.stats(DECONTAM, part.pid).exists()
    drop_stale(work, [part.pid], "other eval documents")
    assert not work.stats(DECONTAM, part.pid).exists() and not work.decontaminated(part.pid).exists()
    assert work.train(part.pid).exists()


def _test_items(lang: str) -> list[str]:
    return (ITEMS / f"{lang}_test.jsonl").read_text(encoding="utf-8").splitlines()


def test_normalize_words_ascii_path_is_the_regex_path():
    rng = random.Random(2)
    ascii_chars = [chr(i) for i in range(128)]
    texts = ["".join(ascii_chars), *("".join(rng.choices(ascii_chars, k=300)) for _ in range(300))]
    texts += ["Ça coûte 3,50 € — «vraiment»?", "The \u212a sign lowers to ASCII k: it's fine."]
    for text in texts:
        assert normalize_words(text) == PUNCTUATION_RE.sub("", text.lower()).split()


def test_eval_documents_file_round_trips_any_text(tmp_path):
    texts = ["plain", "« ¿Qué? »\n\tline two", "lone \ud800 surrogate", ""]
    docs = EvalDocuments(["a", "b"], ["b"], [("a_en", t) for t in texts])
    path = write_eval_documents(tmp_path / "docs.jsonl", docs)
    assert read_eval_documents(path) == docs


def test_eval_documents_file_must_exist_and_match_the_tasks(tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    with pytest.raises(ConfigError, match="needs decontam.documents"):
        eval_ngrams(DecontamConfig(tasks=["a"]))
    with pytest.raises(ConfigError, match="python -m evaluation documents --tasks a --out"):
        eval_ngrams(DecontamConfig(tasks=["a"], documents=str(path)))
    write_eval_documents(path, EvalDocuments(["a", "b"], ["b"], [("a_en", LONG)]))
    with pytest.raises(ConfigError, match="not of decontam.tasks"):
        eval_ngrams(DecontamConfig(tasks=["a"], documents=str(path)))
    ngrams = eval_ngrams(DecontamConfig(tasks=["a", "b"], documents=str(path)))
    assert ngrams.fingerprint == keys(("a_en", LONG)).fingerprint and ngrams.missing == ["b"]
    assert "warning: no data on this machine for b" in capsys.readouterr().out


def test_the_data_job_does_not_load_lm_eval(tmp_path):
    path = write_eval_documents(tmp_path / "docs.jsonl", EvalDocuments(["a"], [], [("a_en", LONG)]))
    code = (
        "import sys; import pipeline.run; from pipeline.config import DecontamConfig; "
        "from pipeline.decontam import eval_ngrams; "
        f"eval_ngrams(DecontamConfig(tasks=['a'], documents={str(path)!r})); "
        "assert not [m for m in sys.modules if m.startswith(('lm_eval', 'evaluation'))]"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


@pytest.mark.slow
def test_the_evaluation_cli_writes_the_file_a_data_config_names(tmp_path):
    config = tmp_path / "data.yaml"
    documents = tmp_path / "documents.jsonl"
    sample = (ROOT / "configs" / "data" / "sample.yaml").read_text()
    config.write_text(sample.replace("data/work/eval_documents/sample.jsonl", str(documents)))
    cli = [sys.executable, "-m", "evaluation", "documents"]
    done = subprocess.run([*cli, "--data-config", str(config)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    docs = read_eval_documents(documents)
    assert (
        docs.tasks == ["stablelm2_cloze", "stablelm2_gen"]
        and docs.missing == []
        and len(docs.documents) > 400
    )
    unknown = subprocess.run([*cli, "--tasks", "no_such_task", "--out", str(tmp_path / "x.jsonl")], cwd=ROOT)
    assert unknown.returncode == 2 and not (tmp_path / "x.jsonl").exists()
    assert subprocess.run([*cli, "--data-config", str(config), "--out", str(documents)], cwd=ROOT).returncode
