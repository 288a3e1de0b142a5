"""The `stablelm2` adapter scores and generates exactly as lm-eval's reference paths do on one tiny export:
lm-eval's `hf` model (transformers, float32) and `local-completions` against the real server started with
`--dtype float32`. Each request's loglikelihood agrees within 1e-4, accuracies are equal, greedy
generations identical; and `loglikelihood_rolling`, which the bundled tasks do not use, agrees with `hf`
across windows of a short context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lm_eval
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import LocalCompletionsAPI

from common.config import CONFIG_DIR
from evaluation.adapter import StableLM2
from evaluation.tasks import load_tasks, task_manager
from harness.server import running_server
from harness.tiny_export import make_tiny_export

CONTEXT = 2048
BATCH = 8
# A few dozen requests: 3 cloze documents in two languages (4 choices each), 4 generations in two.
SHOTS = {
    "stablelm2_cloze_en": None,
    "stablelm2_cloze_fr": None,
    "stablelm2_gen_de": None,
    "stablelm2_gen_pt": None,
}
LIMIT = 3


@pytest.fixture(scope="module", name="export")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_export(tmp_path_factory.mktemp("export"), seed=1, max_position_embeddings=CONTEXT)


def evaluated(lm: Any) -> dict[str, Any]:
    """simple_evaluate on SHOTS with every sample's responses kept."""
    manager = task_manager(SHOTS)
    return lm_eval.simple_evaluate(
        model=lm, tasks=load_tasks(manager, SHOTS), limit=LIMIT, task_manager=manager, bootstrap_iters=0
    )


@pytest.fixture(scope="module")
def ours(export: Path) -> dict[str, Any]:
    return evaluated(StableLM2(str(export), dtype="float32", device="cpu", batch_size=BATCH))


@pytest.fixture(scope="module")
def hf(export: Path) -> dict[str, Any]:
    return evaluated(HFLM(pretrained=str(export), dtype="float32", device="cpu", batch_size=BATCH))


@pytest.fixture(scope="module")
def served(export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("w+") as log:
        with running_server(export, CONFIG_DIR / "serve.yaml", args=["--dtype", "float32"], log=log) as url:
            api = LocalCompletionsAPI(
                model=str(export),
                base_url=f"{url}/v1/completions",
                tokenizer=str(export),
                tokenizer_backend="huggingface",
                max_length=CONTEXT,
                batch_size=BATCH,
            )
            return evaluated(api)


def responses(results: dict[str, Any]) -> dict[tuple[str, int], list[Any]]:
    """(task, document) -> the model's raw responses to that document's requests."""
    return {
        (task, sample["doc_id"]): [r[0] for r in sample["resps"]]
        for task, samples in results["samples"].items()
        for sample in samples
    }


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["hf", "served"])
def test_each_request_scores_and_generates_like_the_reference(ours, reference, request):
    theirs = responses(request.getfixturevalue(reference))
    mine = responses(ours)
    assert mine.keys() == theirs.keys()
    n_scored = n_generated = 0
    for key, answers in mine.items():
        for answer, expected in zip(answers, theirs[key], strict=True):
            if isinstance(answer, str):
                assert answer == expected, key
                n_generated += 1
            else:
                assert answer[0] == pytest.approx(expected[0], abs=1e-4), key
                assert answer[1] == expected[1], key
                n_scored += 1
    assert n_scored == 2 * LIMIT * 4 and n_generated == 2 * LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["hf", "served"])
def test_accuracies_are_identical(ours, reference, request):
    theirs = request.getfixturevalue(reference)["results"]
    for task, metrics in ours["results"].items():
        values = {
            k: v for k, v in metrics.items() if k.startswith(("acc", "exact_match")) and "stderr" not in k
        }
        assert values and values == {k: theirs[task][k] for k in values}, task


def test_rolling_loglikelihood_matches_hf_across_windows(tmp_path):
    """Texts longer than a 32-token context are scored in disjoint windows; each total equals hf's."""
    export = make_tiny_export(tmp_path / "short", seed=2, max_position_embeddings=32)
    texts = [
        "Short.",
        "Die Hauptstadt von Frankreich ist Paris. " * 6,
        " ".join(str(n) for n in range(40)),
        "<|endoftext|> special tokens count as one token each <|im_start|>",
    ]
    requests = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    mine = StableLM2(str(export), device="cpu", batch_size=3).loglikelihood_rolling(requests)
    theirs = HFLM(pretrained=str(export), dtype="float32", device="cpu", batch_size=3).loglikelihood_rolling(
        requests
    )
    assert mine == pytest.approx(theirs, abs=1e-4)
