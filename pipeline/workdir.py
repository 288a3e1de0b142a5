"""Every path under `work_dir` (docs/design.md, "The work dir"): no other module builds them.

A partition `<pid>` is one input file; the stages that keep per-partition stats ("filter", "split",
"mix") write `stats/<stage>/<pid>.json` last, so its presence marks the partition done.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import read_json

# The outputs of the decontam and mix stages: other eval tasks' documents remove them.
_DECONTAM_OUTPUTS = ("decontam", "contaminated", "mixed", "stats/decontam", "stats/mix", "_SUCCESS.json")
# The outputs of the split, decontam and mix stages: a change of their settings removes them.
_MIX_OUTPUTS = ("train", "valid", "dups", "stats/split", *_DECONTAM_OUTPUTS)


@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def success(self) -> Path:
        return self.root / "_SUCCESS.json"

    @property
    def stats_json(self) -> Path:
        return self.root / "stats.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_png(self) -> Path:
        return self.root / "report.png"

    def stats(self, stage: str, pid: str) -> Path:
        return self.root / "stats" / stage / f"{pid}.json"

    def read_stats(self, stage: str, pids: list[str]) -> dict[str, dict[str, Any]]:
        """The stats of every partition of a finished stage, by pid."""
        return {pid: read_json(self.stats(stage, pid)) for pid in pids}

    def filtered(self, pid: str) -> Path:
        return self.root / "filtered" / f"{pid}.parquet"

    def rejects(self, pid: str) -> Path:
        return self.root / "rejects" / f"{pid}.parquet"

    def bad(self, pid: str) -> Path:
        return self.root / "bad" / f"{pid}.parquet"

    def dups(self, pid: str) -> Path:
        return self.root / "dups" / f"{pid}.parquet"

    def train(self, pid: str) -> Path:
        return self.root / "train" / f"{pid}.parquet"

    def decontaminated(self, pid: str) -> Path:
        """The train documents of `pid` that share no n-gram with an eval document."""
        return self.root / "decontam" / f"{pid}.parquet"

    def contaminated(self, pid: str) -> Path:
        """The train documents of `pid` removed for sharing an n-gram with an eval document."""
        return self.root / "contaminated" / f"{pid}.parquet"

    @property
    def valid_dir(self) -> Path:
        return self.root / "valid"

    def valid(self, pid: str) -> Path:
        return self.valid_dir / f"{pid}.parquet"

    @property
    def staged_shards(self) -> Path:
        """Where `pipeline pack` packs shards bound for object storage, before it uploads them; kept, so
        that a re-run resumes from it."""
        return self.root / "shards-staged"

    @property
    def mixed_dir(self) -> Path:
        return self.root / "mixed"

    def mixed(self, pid: str, key: int) -> Path:
        """Named by a seeded hash `key` first, so that name order interleaves the sources."""
        return self.mixed_dir / f"part-{key:08x}-{pid}.parquet"

    def mix_outputs(self) -> list[Path]:
        return [self.root / name for name in _MIX_OUTPUTS]

    def decontam_outputs(self) -> list[Path]:
        return [self.root / name for name in _DECONTAM_OUTPUTS]

    def signatures(self, pid: str, bucket: int) -> Path:
        """The keys of partition `pid` that fall in bucket partition `bucket`."""
        return self.root / "dedup" / "sig" / pid / _bucket_file(bucket)

    def signatures_done(self, pid: str) -> Path:
        return self.root / "dedup" / "sig" / pid / _DONE

    def minhashes(self, index: int) -> Path:
        """The MinHash signatures of partition number `index`, a row per document: named by the index,
        the partition's part of a node id, as the bucket tasks look nodes up."""
        return self.root / "dedup" / "minhash" / f"{index:06d}.npy"

    def bucket_signatures(self, bucket: int) -> list[Path]:
        """The signature files of every partition for one bucket partition."""
        return sorted((self.root / "dedup" / "sig").glob(f"*/{_bucket_file(bucket)}"))

    def edges(self, bucket: int) -> Path:
        return self.root / "dedup" / "edges" / _bucket_file(bucket)

    def edge_files(self) -> list[Path]:
        return sorted((self.root / "dedup" / "edges").glob("b*.parquet"))

    @property
    def dropped(self) -> Path:
        """A folder of parquet files, one per components node partition, each sorted by node."""
        return self.root / "dedup" / "dropped"

    @property
    def components(self) -> ComponentsDir:
        return ComponentsDir(self.root / "dedup" / "cc")


@dataclass(frozen=True)
class ComponentsDir:
    """`dedup/cc`: the connected-components steps, removed when the components are done.

    Step k's input is `s<k>/<producer>/p<j>.parquet`: every producer task scatters its node pairs into
    node partitions j and writes `s<k>/<producer>/_DONE.json` last.
    """

    root: Path

    @property
    def layout(self) -> Path:
        return self.root / "_LAYOUT.json"

    def step(self, step: int) -> Path:
        return self.root / f"s{step:03d}"

    def steps(self) -> dict[int, Path]:
        """The step folders present, by step number."""
        return {int(path.name[1:]): path for path in self.root.glob("s*")}

    def output(self, step: int, producer: str) -> Path:
        """The folder a producer (an edge file's stem, or a node partition) scatters into."""
        return self.step(step) / producer

    def done(self, step: int, producer: str) -> Path:
        return self.output(step, producer) / _DONE

    def done_markers(self, step: int) -> list[Path]:
        return sorted(self.step(step).glob(f"*/{_DONE}"))

    def exact(self, producer: str) -> Path:
        """The nodes of exact-duplicate edges, scattered like the pairs, for the drop reason."""
        return self.root / "exact" / producer

    @property
    def roots_dir(self) -> Path:
        """The last step's output, renamed to `dedup/dropped` when every partition is written."""
        return self.root / "roots"

    def roots(self, part: int) -> Path:
        return self.roots_dir / _part_file(part)

    @staticmethod
    def producer(part: int) -> str:
        return f"p{part:05d}"

    @staticmethod
    def part(folder: Path, part: int) -> Path:
        """Node partition `part` of one producer's output."""
        return folder / _part_file(part)

    @staticmethod
    def parts(folder: Path, part: int) -> list[Path]:
        """Node partition `part` of every producer under `folder` (a step folder)."""
        return sorted(folder.glob(f"*/{_part_file(part)}"))

    def exact_parts(self, part: int) -> list[Path]:
        return self.parts(self.root / "exact", part)


_DONE = "_DONE.json"


def remove_outputs(paths: list[Path]) -> None:
    """Remove the outputs that a change of settings made stale (folders whole)."""
    for target in paths:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _bucket_file(bucket: int) -> str:
    return f"b{bucket:05d}.parquet"


def _part_file(part: int) -> str:
    return f"p{part:05d}.parquet"
