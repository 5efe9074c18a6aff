"""Typed configs: TOML and --set overrides, unknown keys refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trainer.config import ConfigError, build_config


@dataclass(frozen=True)
class ToyConfig:
    dim: int = 8
    lr: float = 1e-3
    name: str = "toy"
    layers: tuple[int, ...] = (1, 2)
    weights: dict | None = None


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text("[model]\ndim = 16\nlr = 1\nlayers = [3, 4]\n")
    config = build_config(ToyConfig, path, ["lr=3e-4", "name=big", "weights={click=0.5}"])
    assert config == ToyConfig(dim=16, lr=3e-4, name="big", layers=(3, 4), weights={"click": 0.5})
    assert isinstance(build_config(ToyConfig, path).lr, float)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text("dims = 16\n")
    with pytest.raises(ConfigError, match="unknown key 'dims' for ToyConfig"):
        build_config(ToyConfig, path)


def test_unknown_or_malformed_override():
    with pytest.raises(ConfigError, match="unknown key 'depth'"):
        build_config(ToyConfig, None, ["depth=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        build_config(ToyConfig, None, ["dim"])


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="'dim' must be int"):
        build_config(ToyConfig, None, ["dim=1.5"])
    with pytest.raises(ConfigError, match="'dim' must be int"):
        build_config(ToyConfig, None, ["dim=true"])


def test_bad_toml(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text("dim = = 3\n")
    with pytest.raises(ConfigError, match=r"toy\.toml"):
        build_config(ToyConfig, path)
