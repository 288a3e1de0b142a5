"""Command line of the data pipeline: one function per subcommand.

python -m pipeline run CONFIG [--set key=value ...] [--verbose]
python -m pipeline explain [--config CONFIG] --source NAME DOCS.jsonl
python -m pipeline pack CONFIG [--set key=value ...] [--verbose]
python -m pipeline inspect DIR [--rows N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

from common.config import ConfigError, add_overrides_argument, load, parse_overrides
from common.files import disk_error
from common.lock import LockError
from common.objectstore import is_url, storage_error
from pipeline.config import DataConfig

DEFAULT_CONFIG = "configs/data/sample.yaml"


def _load(path: str, overrides: list[str]) -> DataConfig:
    """The config with its `--set` overrides; a bad file or override raises ConfigError, which `main`
    prints as one line. Called before the stage modules (Ray, MLflow) are imported, so it fails fast."""
    return load(path, DataConfig, parse_overrides(overrides))


@contextlib.contextmanager
def _disk_errors_told(path: str) -> Iterator[None]:
    """Exit with one line when a full disk or a path that cannot be written stops the job writing to
    `path` (in a Ray worker or here), or the object store at `path` when it is a URL (credentials, the
    bucket, permissions); let any other error through."""
    try:
        yield
    except Exception as e:
        if (line := (storage_error(e, path) if is_url(path) else None) or disk_error(e, path)) is None:
            raise
        sys.exit(line)


def cmd_run(args: argparse.Namespace) -> None:
    cfg = _load(args.config, args.set)
    from pipeline.inputs import InputError
    from pipeline.run import run
    from pipeline.sources import SourceUnreachable

    try:
        with _disk_errors_told(cfg.work_dir):
            run(cfg, verbose=args.verbose)
    except (InputError, LockError) as e:
        sys.exit(f"error: {e}")
    except SourceUnreachable as e:
        # Ray hands the driver the task's error as its `cause`, with Ray's advice on retries appended.
        sys.exit(str(getattr(e, "cause", e)).splitlines()[0])


def cmd_explain(args: argparse.Namespace) -> None:
    cfg = _load(args.config, args.set)
    from pipeline.explain import explain

    try:
        lines = open(args.docs, "rb")  # bytes: a line of invalid UTF-8 is reported as the job counts it
    except OSError as e:
        sys.exit(f"error: cannot read {args.docs}: {e.strerror or e}")
    with lines:
        for result in explain(cfg, args.source, lines):
            print(json.dumps(result, ensure_ascii=False))


def cmd_pack(args: argparse.Namespace) -> None:
    cfg = _load(args.config, args.set)
    from common.shards import ShardError
    from pipeline.pack_job import pack_job

    try:
        with _disk_errors_told(cfg.pack.out_dir):
            pack_job(cfg, verbose=args.verbose)
    except (ShardError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from common.shards import ShardError
    from pipeline.describe import describe

    try:
        print(describe(args.dir, rows=args.rows))
    except ShardError as e:
        sys.exit(f"error: {e}")


def _add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray's own logging and Ray Data's progress bars (default: one line per stage)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="read, filter, deduplicate, split and mix the sources of CONFIG")
    p.add_argument("config")
    add_overrides_argument(p)
    _add_verbose_argument(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser(
        "explain", help="run one source's filter chain on DOCS.jsonl, one JSON line per document"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--source", required=True)
    p.add_argument("docs")
    add_overrides_argument(p)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("pack", help="tokenize and pack the mixed documents of CONFIG into shards")
    p.add_argument("config")
    add_overrides_argument(p)
    _add_verbose_argument(p)
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser("inspect", help="print a shard folder's manifest and a few decoded rows")
    p.add_argument("dir")
    p.add_argument("--rows", type=int, default=3)
    p.set_defaults(func=cmd_inspect)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
