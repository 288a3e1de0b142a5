"""Every path under `work_dir` (docs/design.md, "The work dir"): no other module builds them. The work
dir is a local folder or a prefix in object storage: its paths are `pipeline.workfiles.WorkPath`s.

A partition `<pid>` is one input file; the stages that keep per-partition stats ("filter", "split",
"mix") write `stats/<stage>/<pid>.json` last, so its presence marks the partition done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.workfiles import WorkPath, as_path, glob, node_folder, read_json, remove

# The outputs of the decontam and mix stages: other eval tasks' documents remove them.
_DECONTAM_OUTPUTS = ("decontam", "contaminated", "mixed", "stats/decontam", "stats/mix", "_SUCCESS.json")
# The outputs of the split, decontam and mix stages: a change of their settings removes them.
_MIX_OUTPUTS = ("train", "valid", "dups", "stats/split", *_DECONTAM_OUTPUTS)


@dataclass(frozen=True)
class WorkDir:
    root: WorkPath

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", as_path(self.root))

    @property
    def plan(self) -> WorkPath:
        return self.root / "plan.json"

    @property
    def success(self) -> WorkPath:
        return self.root / "_SUCCESS.json"

    @property
    def stats_json(self) -> WorkPath:
        return self.root / "stats.json"

    @property
    def report_md(self) -> WorkPath:
        return self.root / "report.md"

    @property
    def report_png(self) -> WorkPath:
        return self.root / "report.png"

    def stats(self, stage: str, pid: str) -> WorkPath:
        return self.root / "stats" / stage / f"{pid}.json"

    def read_stats(self, stage: str, pids: list[str]) -> dict[str, dict[str, Any]]:
        """The stats of every partition of a finished stage, by pid."""
        return {pid: read_json(self.stats(stage, pid)) for pid in pids}

    def filtered(self, pid: str) -> WorkPath:
        return self.root / "filtered" / f"{pid}.parquet"

    def rejects(self, pid: str) -> WorkPath:
        return self.root / "rejects" / f"{pid}.parquet"

    def bad(self, pid: str) -> WorkPath:
        return self.root / "bad" / f"{pid}.parquet"

    def dups(self, pid: str) -> WorkPath:
        return self.root / "dups" / f"{pid}.parquet"

    def train(self, pid: str) -> WorkPath:
        return self.root / "train" / f"{pid}.parquet"

    def decontaminated(self, pid: str) -> WorkPath:
        """The train documents of `pid` that share no n-gram with an eval document."""
        return self.root / "decontam" / f"{pid}.parquet"

    def contaminated(self, pid: str) -> WorkPath:
        """The train documents of `pid` removed for sharing an n-gram with an eval document."""
        return self.root / "contaminated" / f"{pid}.parquet"

    @property
    def valid_dir(self) -> WorkPath:
        return self.root / "valid"

    def valid(self, pid: str) -> WorkPath:
        return self.valid_dir / f"{pid}.parquet"

    @property
    def staged_shards(self) -> Path:
        """Where `pipeline pack` packs shards bound for object storage, before it uploads them; kept, so
        that a re-run resumes from it. A local folder: of a work dir in object storage, one of this node
        (`node_folder`)."""
        return node_folder(self.root / "shards-staged")

    @property
    def mixed_dir(self) -> WorkPath:
        return self.root / "mixed"

    def mixed(self, pid: str, key: int) -> WorkPath:
        """Named by a seeded hash `key` first, so that name order interleaves the sources."""
        return self.mixed_dir / f"part-{key:08x}-{pid}.parquet"

    def mix_outputs(self) -> list[WorkPath]:
        return [self.root / name for name in _MIX_OUTPUTS]

    def decontam_outputs(self) -> list[WorkPath]:
        return [self.root / name for name in _DECONTAM_OUTPUTS]

    def signatures(self, pid: str, bucket: int) -> WorkPath:
        """The keys of partition `pid` that fall in bucket partition `bucket`."""
        return self.root / "dedup" / "sig" / pid / _bucket_file(bucket)

    def signatures_done(self, pid: str) -> WorkPath:
        return self.root / "dedup" / "sig" / pid / _DONE

    def minhashes(self, index: int) -> WorkPath:
        """The MinHash signatures of partition number `index`, a row per document: named by the index,
        the partition's part of a node id, as the bucket tasks look nodes up."""
        return self.root / "dedup" / "minhash" / f"{index:06d}.npy"

    def bucket_signatures(self, bucket: int) -> list[WorkPath]:
        """The signature files of every partition for one bucket partition."""
        return glob(self.root / "dedup" / "sig", f"*/{_bucket_file(bucket)}")

    def edges(self, bucket: int) -> WorkPath:
        return self.root / "dedup" / "edges" / _bucket_file(bucket)

    def edge_files(self) -> list[WorkPath]:
        return glob(self.root / "dedup" / "edges", "b*.parquet")

    @property
    def dropped(self) -> WorkPath:
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

    root: WorkPath

    @property
    def layout(self) -> WorkPath:
        return self.root / "_LAYOUT.json"

    def step(self, step: int) -> WorkPath:
        return self.root / f"s{step:03d}"

    def steps(self) -> dict[int, WorkPath]:
        """The step folders present, by step number."""
        return {int(path.name[1:]): path for path in glob(self.root, "s*")}

    def output(self, step: int, producer: str) -> WorkPath:
        """The folder a producer (an edge file's stem, or a node partition) scatters into."""
        return self.step(step) / producer

    def done(self, step: int, producer: str) -> WorkPath:
        return self.output(step, producer) / _DONE

    def done_markers(self, step: int) -> list[WorkPath]:
        return glob(self.step(step), f"*/{_DONE}")

    def exact(self, producer: str) -> WorkPath:
        """The nodes of exact-duplicate edges, scattered like the pairs, for the drop reason."""
        return self.root / "exact" / producer

    @property
    def roots_dir(self) -> WorkPath:
        """The last step's output, published as `dedup/dropped` when every partition is written."""
        return self.root / "roots"

    def roots(self, part: int) -> WorkPath:
        return self.roots_dir / _part_file(part)

    @staticmethod
    def producer(part: int) -> str:
        return f"p{part:05d}"

    @staticmethod
    def part(folder: WorkPath, part: int) -> WorkPath:
        """Node partition `part` of one producer's output."""
        return folder / _part_file(part)

    @staticmethod
    def parts(folder: WorkPath, part: int) -> list[WorkPath]:
        """Node partition `part` of every producer under `folder` (a step folder)."""
        return glob(folder, f"*/{_part_file(part)}")

    def exact_parts(self, part: int) -> list[WorkPath]:
        return self.parts(self.root / "exact", part)


_DONE = "_DONE.json"


def remove_outputs(paths: list[WorkPath]) -> None:
    """Remove the outputs that a change of settings made stale (folders whole)."""
    for target in paths:
        remove(target)


def _bucket_file(bucket: int) -> str:
    return f"b{bucket:05d}.parquet"


def _part_file(part: int) -> str:
    return f"p{part:05d}.parquet"
