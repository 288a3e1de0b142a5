"""Evaluate an export or a training checkpoint with lm-evaluation-harness.

    python -m evaluation run --model PATH (--tasks A,B | --suite NAME) [--num-fewshot N] [--limit N]
                             [--batch-size N] [--dtype float32|bfloat16|float16|auto] [--device D]
                             [--output DIR] [--include-path DIR ...] [--log-samples]
                             [--apply-chat-template] [--system-instruction TEXT]
    python -m evaluation documents (--tasks A,B --out FILE | --data-config CONFIG)

`--tasks` takes lm-eval task, group or tag names (the bundled ones: stablelm2_cloze, stablelm2_gen);
`--suite` a suite of tasks with their shot counts (configs/eval/<name>.yaml: `bundled`, `card`) or a
suite file; `--include-path` adds folders of the user's own task YAMLs. Prints the results table, writes
DIR/results.json (default runs/eval/<model folder name>), with --log-samples each task's per-document
records as DIR/samples_<task>.jsonl, and logs an MLflow run in experiment `eval`. DIR is absent, empty
or an earlier run's output (its files are replaced); a file or a folder holding anything else is
refused before any work.
Nothing is downloaded: data sets come from the local Hugging Face cache or the repository.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

from common.precision import Dtype

EXIT_BAD_INPUT = 2
EXIT_DISK = 1  # a full disk or a path that cannot be written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="evaluate a model on tasks or a suite")
    run.add_argument("--model", required=True, type=Path, help="an export folder or a training checkpoint")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--tasks", help="comma-separated lm-eval task, group or tag names")
    which.add_argument("--suite", help="a suite in configs/eval (bundled, card) or a suite YAML file")
    run.add_argument("--num-fewshot", type=int, help="few-shot examples for every task (default: its own)")
    run.add_argument("--limit", type=float, help="documents per task (below 1: a fraction of them)")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument(
        "--dtype",
        default="float32",
        choices=get_args(Dtype),
        help="float32 (default: exact), or auto: bf16 where the device computes it natively, else fp32",
    )
    run.add_argument("--device", default="auto", help="cpu, cuda or auto")
    run.add_argument(
        "--output",
        type=Path,
        help="where results.json goes (default runs/eval/<model name>); not a folder of other files",
    )
    run.add_argument(
        "--include-path",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder of your own lm-eval task YAMLs (repeatable); a suite's include_path adds to these",
    )
    run.add_argument(
        "--log-samples",
        action="store_true",
        help="write each task's per-document records: DIR/samples_<task>.jsonl",
    )
    run.add_argument(
        "--apply-chat-template",
        action="store_true",
        help="format prompts with the export's chat template (its tokenizer_config.json)",
    )
    run.add_argument("--system-instruction", metavar="TEXT", help="a system message before every prompt")
    documents = commands.add_parser(
        "documents", help="write the eval documents file that the data job decontaminates against"
    )
    names = documents.add_mutually_exclusive_group(required=True)
    names.add_argument("--tasks", help="comma-separated lm-eval task, group or tag names (with --out)")
    names.add_argument("--data-config", type=Path, help="a data config: its decontam.tasks and .documents")
    documents.add_argument("--out", type=Path, help="the file to write (with --tasks)")
    args = parser.parse_args(argv)
    if args.command == "documents":
        return _write_documents(args, documents)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # Imported once the arguments are known: lm-eval, torch and transformers take seconds to import.
    from lm_eval.utils import make_table

    from common.config import ConfigError
    from common.files import disk_error
    from evaluation.loading import TokenizerMismatchError
    from evaluation.run import evaluate
    from evaluation.tasks import MissingDataError, load_suite
    from training.trained import NotAModelError

    output = args.output or Path("runs") / "eval" / args.model.resolve().name
    try:
        suite = load_suite(args.suite) if args.suite else None
        names = [] if suite else [name.strip() for name in args.tasks.split(",") if name.strip()]
        shots = suite.tasks if suite else dict.fromkeys(names)
        limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
        done = evaluate(
            args.model,
            shots,
            output,
            num_fewshot=args.num_fewshot,
            limit=limit,
            batch_size=args.batch_size,
            dtype=args.dtype,
            device=args.device,
            include_paths=[*args.include_path, *(suite.include_path if suite else [])],
            log_samples=args.log_samples,
            apply_chat_template=args.apply_chat_template,
            system_instruction=args.system_instruction,
        )
    except (ConfigError, NotAModelError, TokenizerMismatchError, MissingDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        if (line := disk_error(e, output)) is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_DISK
    print(make_table(done.results))
    if done.results.get("groups"):
        print(make_table(done.results, "groups"))
    print(f"results: {done.path}")
    print(f"MLflow run {done.run_id} (experiment eval) in {done.tracking_uri} (make mlflow-ui)")
    return 0


def _write_documents(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if (args.out is None) != (args.data_config is not None):
        parser.error("--out goes with --tasks, and only with it")
    from common.config import ConfigError
    from evaluation.documents import write_documents, write_documents_of

    try:
        if args.tasks:
            docs = write_documents([name.strip() for name in args.tasks.split(",") if name.strip()], args.out)
        else:
            docs = write_documents_of(args.data_config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if docs is None:
        print(f"{args.data_config}: no decontam.tasks, no eval documents to write")
        return 0
    missing = f"; no data on this machine for {', '.join(docs.missing)}" if docs.missing else ""
    print(f"{len(docs.documents):,} eval documents of {', '.join(docs.tasks)}{missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
