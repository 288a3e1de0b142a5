"""The pipeline end to end on local Ray: the bundled sample with its planted cases, dedup,
decontamination, mixing, bad input, a killed and resumed run, and the explain CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, table_rows

from common import config as configs
from harness.stages import run_in_process
from pipeline.components import components
from pipeline.config import DataConfig
from pipeline.dedup import EDGE_SCHEMA, bucket_partition, signature_partition
from pipeline.explain import explain
from pipeline.plan import make_plan
from pipeline.run import run
from pipeline.storage import DOC_SCHEMA, write_table
from pipeline.workdir import WorkDir

SAMPLE = ROOT / "configs" / "data" / "sample.yaml"
LABELS = ROOT / "data" / "sample" / "labels.jsonl"


def sample_config(work_dir: Path, eval_documents: Path | None = None, **overrides) -> DataConfig:
    """The sample config in `work_dir`; `eval_documents`: its decontam.documents, needed to run it."""
    if eval_documents is not None:
        overrides["decontam.documents"] = str(eval_documents)
    cfg = configs.load(SAMPLE, DataConfig, {"work_dir": str(work_dir), **overrides})
    # Sample paths are relative to the repository root.
    sources = {
        name: src.model_copy(update={"paths": [str(ROOT / p) for p in src.paths]})
        for name, src in cfg.sources.items()
    }
    return cfg.model_copy(update={"sources": sources})


@pytest.fixture(scope="module")
def sample_run(ray_local, eval_documents, tmp_path_factory) -> Path:
    return run(sample_config(tmp_path_factory.mktemp("sample") / "work", eval_documents))


def fates(work: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Where every document ended up: kept, dropped by a filter, excluded, bad input, duplicate, or
    contaminated (sharing an n-gram with an eval task: the rule is the task)."""
    fate = {
        r["id"]: ("kept", None, None)
        for r in table_rows(work, "train", ["id"]) + table_rows(work, "valid", ["id"])
    }
    for r in table_rows(work, "rejects", ["id", "reason", "rule"]):
        fate[r["id"]] = ("excluded" if r["reason"] == "exclude" else "dropped", r["reason"], r["rule"])
    fate.update({r["id"]: ("bad", r["reason"], None) for r in table_rows(work, "bad", ["id", "reason"])})
    fate.update(
        {r["id"]: ("duplicate", r["reason"], None) for r in table_rows(work, "dups", ["id", "reason"])}
    )
    contaminated = table_rows(work, "contaminated", ["id", "reason", "rule"])
    fate.update({r["id"]: ("contaminated", r["reason"], r["rule"]) for r in contaminated})
    return fate


@pytest.mark.slow
def test_planted_cases_meet_their_labelled_fate(sample_run):
    fate = fates(sample_run)
    labels = [json.loads(line) for line in LABELS.read_text().splitlines()]
    assert len(labels) >= 30
    for label in labels:
        got = fate.get(label["id"])
        assert got is not None, f"{label['case']}: {label['id']} is in no output"
        kind, reason, rule = got
        assert kind == label["expected"], (label, got)
        if label["reason"] is not None:
            assert label["reason"] in (reason or "") or label["reason"] in (rule or ""), (label, got)
        if "rule" in label:
            assert rule == label["rule"], (label, got)


@pytest.mark.slow
def test_outputs_split_and_report(sample_run):
    mixed = pq.read_table(sample_run / "mixed")
    assert mixed.schema.names == DOC_SCHEMA.names
    valid_ids = {r["id"] for r in table_rows(sample_run, "valid", ["id"])}
    assert valid_ids, "the validation split is empty"
    mixed_base_ids = {i.split("~")[0] for i in mixed.column("id").to_pylist()}
    assert not valid_ids & mixed_base_ids, "a validation document reached the training mix"
    assert {"en", "de", "es", "fr", "it", "nl", "pt", "code"} <= set(mixed.column("lang").to_pylist())
    stats = json.loads((sample_run / "stats.json").read_text())
    for name, s in stats["sources"].items():
        stages = [v["docs"] for v in s["stages"].values()]
        assert stages[0] > 0 and stages[:-1] == sorted(stages[:-1], reverse=True), name
    assert (sample_run / "report.png").stat().st_size > 10_000
    assert "target share" in (sample_run / "report.md").read_text()


@pytest.mark.slow
def test_planted_eval_pages_are_removed_and_look_alikes_kept(sample_run):
    """Pages quoting a bundled eval item are removed from training, their clean look-alikes are not,
    and the report counts the removed ones per source and task."""
    labels = [json.loads(line) for line in LABELS.read_text().splitlines()]
    planted = {x["id"]: x["reason"] for x in labels if x["expected"] == "contaminated"}
    assert len(planted) >= 28
    contaminated = {r["id"]: r["rule"] for r in table_rows(sample_run, "contaminated", ["id", "rule"])}
    removed = [i for i in planted if i in contaminated]
    assert len(removed) >= 0.99 * len(planted)
    assert all(contaminated[i] == planted[i] for i in removed)
    clean_removed = set(contaminated) - set(planted)
    train = table_rows(sample_run, "train", ["id"])
    assert len(clean_removed) <= 0.001 * len(train), clean_removed
    stats = json.loads((sample_run / "stats.json").read_text())
    counted = {(n, t): c for n, s in stats["sources"].items() for t, c in s["contaminated"].items()}
    found = Counter((i.split("/")[0], task) for i, task in contaminated.items())
    assert counted == dict(found)
    assert stats["decontam"]["ngram"] == 13 and stats["decontam"]["missing_tasks"] == []
    assert "stablelm2_gen_de" in (sample_run / "report.md").read_text()
    mixed = {r["id"].split("~")[0] for r in table_rows(sample_run, "mixed", ["id"])}
    assert not mixed & set(contaminated)


@pytest.mark.slow
def test_mixture_achieves_its_targets(sample_run):
    stats = json.loads((sample_run / "stats.json").read_text())
    for name, m in stats["mixture"].items():
        assert m["achieved_share"] == pytest.approx(m["target_share"], abs=0.03), name
    # CulturaX has more text than its 15% share: it is sampled down; the Pile is repeated.
    assert stats["mixture"]["culturax"]["rate"] < 1 < stats["mixture"]["pile"]["rate"]
    mixed_ids = [i for i in pq.read_table(sample_run / "mixed", columns=["id"]).column("id").to_pylist()]
    assert any(i.startswith("pile/") and "~" in i for i in mixed_ids)


def test_dedup_stages_are_partition_independent(tmp_path):
    """Scattering the signatures over 1 or 5 bucket partitions finds the same duplicates and survivors."""
    from pipeline.read_filter import filter_partition  # runs one input file, no Ray needed

    cfg = sample_config(tmp_path / "work")
    work = WorkDir(cfg.work_dir)
    plan = make_plan(cfg)
    picked = [p for p in plan.partitions if p.source in ("refinedweb", "pile")]
    for p in picked:
        filter_partition(p, cfg.sources, work, rejects=False)
    results = []
    for buckets in (1, 5):
        for p in picked:
            signature_partition(p, cfg.dedup, work, buckets)
        for j in range(buckets):
            bucket_partition(j, work, cfg.dedup)
        components(work, 1, run_in_process)
        dedup = Path(cfg.work_dir) / "dedup"
        results.append(pq.read_table(dedup / "dropped").sort_by("node").to_pylist())
        for f in dedup.rglob("*.parquet"):
            f.unlink()
    assert results[0] == results[1]
    reasons = {r["reason"] for r in results[0]}
    assert reasons == {"exact_dup", "near_dup"}
    # The refinedweb copy (earliest source) survives its near duplicate in the Pile.
    pile_index = next(p.index for p in picked if p.source == "pile")
    near = [r for r in results[0] if r["node"] >> 32 == pile_index]
    assert near and all(r["root"] >> 32 < pile_index for r in near)


def test_components_link_chains_to_their_smallest_node(tmp_path):
    # A chain 50-49-...-10 whose edges arrive in the worst order, and a separate pair 7-3.
    chain = [(n, n - 1) for n in range(11, 51)][::-1]
    node, root = zip(*[*chain, (7, 3)], strict=True)
    edges = pa.table({"node": node, "root": root, "kind": [1] * len(node)}, schema=EDGE_SCHEMA)
    write_table(WorkDir(tmp_path).edges(0), edges)
    components(WorkDir(tmp_path), 1, run_in_process)
    dropped = pq.read_table(tmp_path / "dedup" / "dropped").to_pylist()
    assert {r["node"]: r["root"] for r in dropped} == {**{n: 10 for n in range(11, 51)}, 7: 3}
    assert {r["reason"] for r in dropped} == {"near_dup"}


@pytest.mark.slow
def test_bad_input_is_set_aside_and_broken_config_fails_early(ray_local, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = {
        "text": (ROOT / "data" / "sample" / "banks.py").read_text()[:3000],
        "meta": {"pile_set_name": "Pile-CC"},
    }
    lines = [json.dumps(good), '{"text": "cut', json.dumps({"text": ["a list"]}), json.dumps({"text": ""})]
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    (src / "b.jsonl.zst").write_bytes(b"not zstd at all")
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"work_dir: {tmp_path / 'work'}\n"
        "sources:\n"
        "  pile:\n"
        "    reader: pile\n"
        f"    paths: ['{src}/*.jsonl', '{src}/*.zst', '{src}/missing.jsonl.zst']\n"
        "    epochs: 1\n"
        "    filters: {code: {}}\n"
    )
    work = run(configs.load(config, DataConfig))
    reasons = sorted(r["reason"].split(":")[0] for r in table_rows(work, "bad", ["reason"]))
    assert reasons == ["empty document", "malformed json", "unreadable file", "wrong schema"]
    stats = json.loads((work / "stats.json").read_text())
    assert stats["missing_inputs"] == [
        {"source": "pile", "path": f"{src}/missing.jsonl.zst", "reason": "no file matches"}
    ]
    assert stats["sources"]["pile"]["stages"]["mixed"]["docs"] == 1

    broken = tmp_path / "broken.yaml"
    text = config.read_text().replace("epochs: 1", "epochs: 1\n    weight: 0.5")
    broken.write_text(text.replace(str(tmp_path / "work"), str(tmp_path / "work2")))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(broken)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode != 0 and "exactly one of `weight` or `epochs`" in result.stderr
    assert not (tmp_path / "work2").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output(ray_local, sample_run, eval_documents, tmp_path):
    work = tmp_path / "killed"
    env = {**os.environ, "RAY_ADDRESS": ray_local, "PYTHONPATH": str(ROOT)}
    config = tmp_path / "sample.yaml"
    text = SAMPLE.read_text().replace("data/sample/", f"{ROOT}/data/sample/")
    text = text.replace("documents: data/work/eval_documents/sample.jsonl", f"documents: {eval_documents}")
    config.write_text(text.replace("work_dir: data/work/sample", f"work_dir: {work}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while len(list((work / "stats" / "filter").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list((work / "stats" / "filter").glob("*.json")))
    assert 3 <= finished < 20, "the run was not killed part-way through filtering"
    assert not (work / "_SUCCESS.json").exists()

    resumed = run(sample_config(work, eval_documents))
    for folder in ("mixed", "valid", "rejects", "bad", "dups", "contaminated"):
        names = sorted(f.name for f in (sample_run / folder).glob("*.parquet"))
        assert names == sorted(f.name for f in (resumed / folder).glob("*.parquet")), folder
        for name in names:
            assert pq.read_table(resumed / folder / name).equals(pq.read_table(sample_run / folder / name)), (
                name
            )
    assert not list(resumed.rglob("*.tmp")), "temporary files of the killed run were left behind"

    # A new mixture redoes split and mix only; the filtered partitions are reused as they are.
    filtered_mtimes = {f: f.stat().st_mtime_ns for f in (resumed / "filtered").glob("*.parquet")}
    remixed = run(sample_config(work, eval_documents, **{"sources.pile.weight": 0.4}))
    stats = json.loads((remixed / "stats.json").read_text())
    assert stats["mixture"]["pile"]["achieved_share"] == pytest.approx(0.4 / 1.25, abs=0.03)
    assert filtered_mtimes == {f: f.stat().st_mtime_ns for f in (resumed / "filtered").glob("*.parquet")}


@pytest.mark.parametrize(
    "command",
    [["run", str(SAMPLE)], ["pack", str(SAMPLE)], ["explain", "--source", "refinedweb", os.devnull]],
)
def test_malformed_override_is_a_one_line_error(command):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *command, "--set", "foo"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["error: --set 'foo': expected KEY=VALUE"], result.stderr


def test_explain_cli_matches_the_job(tmp_path):
    docs = tmp_path / "docs.jsonl"
    en = " ".join(
        [
            "The harbour is the oldest part of the village and was rebuilt after the storm of 1953.",
            "Fishing boats still land their catch there every morning, and the market opens at seven.",
            "A small museum on the quay tells the story of the lifeboat crew and the families of the town.",
            "In summer a ferry runs to the island twice a day, and the trip takes about forty minutes.",
            "The old warehouse has been turned into a library with a reading room that looks over the water.",
            "Most visitors walk along the cliffs to the lighthouse, which can be visited on weekends.",
        ]
    )
    lines = [
        {"id": "good", "text": en.replace(". ", ".\n")},
        {"id": "polish", "text": "Miasto leży nad rzeką i liczy około dwudziestu tysięcy mieszkańców."},
        {"id": "spam", "text": "buy cheap watches " * 40},
    ]
    docs.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "explain",
            "--config",
            str(SAMPLE),
            "--source",
            "refinedweb",
            str(docs),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    results = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert results["good"]["kept"] and results["good"]["reason"] is None and results["good"]["lang"] == "en"
    assert results["polish"] == {**results["polish"], "kept": False, "reason": "langid", "lang": "pl"}
    assert results["polish"]["lang_score"] > 0.9
    assert results["spam"]["reason"] == "gopher_repetition"
    # Every filter's own decision is reported, also after the first drop.
    assert set(results["spam"]["filters"]) == {"langid", "gopher_repetition", "gopher_quality", "c4"}
    assert results["3"]["reason"] == "bad_input"


@pytest.mark.slow
def test_explain_agrees_with_the_job_on_the_sample(sample_run):
    cfg = sample_config(sample_run)
    rejects = table_rows(sample_run, "rejects", ["id", "source", "reason", "rule", "text"])
    for source in ("refinedweb", "culturax"):
        picked = [r for r in rejects if r["source"] == source and r["reason"] != "exclude"]
        # Rejected text is the text as the failing filter saw it; re-running gives the same decision.
        lines = [json.dumps({"id": r["id"], "text": r["text"]}).encode() for r in picked]
        got = {r["id"]: (r["reason"], r["rule"]) for r in explain(cfg, source, iter(lines))}
        assert got == {r["id"]: (r["reason"], r["rule"]) for r in picked}
