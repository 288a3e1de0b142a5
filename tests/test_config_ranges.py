"""Every numeric setting of the data, train, serve and eval configs has its valid range in the typed model:
each field is walked (through nested models, optional sections, source maps, lists and tuples) and given,
through a `--set` override, a value past each of its bounds, which `load` must refuse naming the key."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from common.config import CONFIG_DIR, ConfigError, load, parse_overrides
from evaluation.tasks import Suite
from pipeline.config import DataConfig
from serving.config import ServeConfig
from training.config import TrainConfig

# Each kind of shipped config file and its model; configs/eval/tasks holds lm-eval's task files.
SHIPPED = {
    "data/*.yaml": DataConfig,
    "train/*.yaml": TrainConfig,
    "serve.yaml": ServeConfig,
    "eval/*.yaml": Suite,
}
# The file each model's fields are walked on (it fills the required fields and names the map keys).
BASE = {
    DataConfig: "data/sample.yaml",
    TrainConfig: "train/tiny.yaml",
    ServeConfig: "serve.yaml",
    Suite: "eval/bundled.yaml",
}


def _shipped() -> list[tuple[Path, type[BaseModel]]]:
    return [(path, model) for pattern, model in SHIPPED.items() for path in sorted(CONFIG_DIR.glob(pattern))]


def _outside(metadata: list[Any], is_int: bool) -> list[Any]:
    """A value just past each bound in a field's constraints; none when the field has no bound."""
    step = 1 if is_int else 0.5
    values = []
    for bound in metadata:
        if isinstance(bound, annotated_types.Ge):
            values.append(bound.ge - step)
        elif isinstance(bound, annotated_types.Gt):
            values.append(bound.gt)
        elif isinstance(bound, annotated_types.Le):
            values.append(bound.le + step)
        elif isinstance(bound, annotated_types.Lt):
            values.append(bound.lt)
    return values


def _split(annotation: Any) -> tuple[Any, list[Any]]:
    """The type without None and Annotated, and the constraints Annotated carried."""
    metadata: list[Any] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata = [m for info in extra for m in getattr(info, "metadata", [info])]
    return annotation, metadata


def _bad_values(annotation: Any, metadata: list[Any], default: Any, key: str) -> Iterator[Any]:
    """Values of the field's type that break a bound of a number in it (a number, or one in a tuple or
    a list of them, the rest of it left valid from the default). Fails for a number without a bound."""
    annotation, more = _split(annotation)
    metadata = metadata + more
    if annotation in (int, float):
        values = _outside(metadata, annotation is int)
        assert values, f"{key}: a numeric setting without a range"
        yield from values
    elif typing.get_origin(annotation) is tuple:
        for i, item in enumerate(typing.get_args(annotation)):
            for bad in _bad_values(item, [], default[i], f"{key}.{i}"):
                yield [*default[:i], bad, *default[i + 1 :]]
    elif typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        first = default[0] if isinstance(default, list) and default else None
        yield from ([bad] for bad in _bad_values(item, [], first, f"{key}.0"))


def _overrides(model: type[BaseModel], raw: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, out-of-range value) for every bound of every numeric setting of `model`; a map of
    models or numbers is walked through the keys the base file gives it."""
    for name, field in model.model_fields.items():
        key, value = f"{prefix}{name}", raw.get(name) if isinstance(raw, dict) else None
        annotation, _ = _split(field.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _overrides(annotation, value, f"{key}.")
        elif typing.get_origin(annotation) is dict:
            _, item = typing.get_args(annotation)
            item_type, _ = _split(item)
            for entry in value or {}:
                if isinstance(item_type, type) and issubclass(item_type, BaseModel):
                    yield from _overrides(item_type, value[entry], f"{key}.{entry}.")
                else:
                    yield from ((f"{key}.{entry}", bad) for bad in _bad_values(item, [], None, key))
        else:
            default = field.get_default(call_default_factory=True)
            yield from ((key, bad) for bad in _bad_values(field.annotation, field.metadata, default, key))


CASES = [
    pytest.param(model, key, bad, id=f"{model.__name__}:{key}={bad}")
    for model, base in BASE.items()
    for key, bad in _overrides(model, yaml.safe_load((CONFIG_DIR / base).read_text()))
]


def test_the_walk_reaches_nested_maps_tuples_and_every_model():
    keys = {(model, key) for model, key, _ in (case.values for case in CASES)}
    assert (DataConfig, "dedup.ngram") in keys and (DataConfig, "dedup.rows") in keys
    assert (DataConfig, "sources.refinedweb.filters.gopher_repetition.top_n_grams") in keys
    assert (DataConfig, "sources.culturax.max_doc_chars") in keys
    assert (TrainConfig, "model.num_heads") in keys and (TrainConfig, "optim.betas") in keys
    assert (ServeConfig, "max_batch_size") in keys and (Suite, "tasks.stablelm2_cloze") in keys


@pytest.mark.parametrize(("model", "key", "bad"), CASES)
def test_a_value_out_of_range_is_refused_naming_its_key(model, key, bad):
    overrides = parse_overrides([f"{key}={json.dumps(bad)}"])
    with pytest.raises(ConfigError) as e:
        load(CONFIG_DIR / BASE[model], model, overrides)
    assert re.search(rf"(^|\s){re.escape(key)}[.:]", str(e.value)), str(e.value)


@pytest.mark.parametrize("setting", ["dedup.ngram=0", "dedup.rows=-1"])
def test_dedup_shape_refused_in_one_line(setting):
    """Issue 23 row 5: both were accepted, then broke Ray workers (ngram 0 read past minhash's arrays)."""
    with pytest.raises(ConfigError) as e:
        load(CONFIG_DIR / "data/sample.yaml", DataConfig, parse_overrides([setting]))
    key = setting.split("=")[0]
    assert "\n" not in str(e.value) and f"invalid config: {key}: " in str(e.value)


@pytest.mark.parametrize(("path", "model"), _shipped(), ids=lambda p: getattr(p, "name", ""))
def test_shipped_configs_load(path, model):
    assert load(path, model)


def test_every_kind_of_shipped_config_is_checked():
    kinds = {model for _, model in _shipped()}
    assert kinds == set(SHIPPED.values()) and len(_shipped()) >= 7
