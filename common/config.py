"""The one config system: YAML files under configs/ validated by typed pydantic models.

Each stage declares its own models (subclasses of `Config`) and loads a file with `load`. Unknown
keys and wrong types are errors that name the file and the dotted key, raised before any work starts.
Every command line takes the same `--set key=value` overrides (`add_overrides_argument`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "CONFIG_DIR",
    "Config",
    "ConfigError",
    "add_overrides_argument",
    "fingerprint",
    "flatten",
    "load",
    "parse_overrides",
]

# The YAML files of the repository (configs/ holds nothing else).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the offending keys."""


class Config(BaseModel):
    """Base of every config model: unknown keys are rejected, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=Config)


def load(path: str | Path, model: type[C], overrides: Mapping[str, Any] | None = None) -> C:
    """Read the YAML file at `path` into `model`, after applying dotted-key `overrides`.

    `overrides` maps keys such as ``"optim.lr"`` to values (see `parse_overrides`); a key that the
    model does not know is reported like an unknown key in the file.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(path, e)) from None


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """The `--set KEY=VALUE` option (repeatable) that every command taking a config accepts."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, the value read as YAML (e.g. --set optim.lr=3e-4)",
    )


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`--set key=value` arguments as dotted overrides; values are read as YAML (numbers, lists...)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}") from None
    return overrides


def fingerprint(config: BaseModel) -> str:
    """sha256 of the config's canonical JSON: equal configs hash equal, whatever the YAML layout."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config values as dotted keys, as MLflow params: {"optim.lr": "0.001"}."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _describe(path: Path, error: ValidationError) -> str:
    """One line for one problem (`path: invalid config: key: why`), else one line per problem."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            problems.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    if len(problems) == 1:
        return f"{path}: invalid config: {problems[0]}"
    return "\n  ".join([f"{path}: invalid config", *problems])
