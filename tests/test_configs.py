"""The config system: typed models, errors that name the file and the key."""

from __future__ import annotations

import pytest

from common.config import Config, ConfigError, fingerprint, load


class Optim(Config):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


class Train(Config):
    steps: int
    optim: Optim = Optim()


def write(tmp_path, text: str):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_loads_typed_values_and_defaults(tmp_path):
    cfg = load(write(tmp_path, "steps: 10\noptim:\n  lr: 3.0e-4\n"), Train)
    assert cfg.steps == 10 and cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.95)


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, "steps: 10\noptim:\n  lr: 1.0e-3\n  betaz: [0.9, 0.9]\n")
    with pytest.raises(ConfigError) as e:
        load(path, Train)
    assert str(path) in str(e.value) and "optim.betaz: unknown key" in str(e.value)


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"steps: .*'ten'"):
        load(write(tmp_path, "steps: ten\n"), Train)


def test_broken_yaml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "steps: [1, 2\n"), Train)
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.yaml", Train)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(write(tmp_path, "- 1\n- 2\n"), Train)


def test_dotted_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, "steps: 10\n")
    assert load(path, Train, {"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(ConfigError, match="optim.nope: unknown key"):
        load(path, Train, {"optim.nope": 1})


def test_fingerprint_depends_on_values_not_layout(tmp_path):
    a = load(write(tmp_path, "steps: 10\noptim: {lr: 0.001}\n"), Train)
    b = load(write(tmp_path, "optim:\n  lr: 1.0e-3\nsteps: 10\n"), Train)
    c = load(write(tmp_path, "steps: 11\n"), Train)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
