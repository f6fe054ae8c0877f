from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hoi_perception.config import ConfigError, load_config, to_dict


@dataclass
class Inner:
    rate: float = 1.0
    mode: Literal["fast", "slow"] = "fast"

    def validate(self) -> None:
        if self.rate <= 0:
            raise ConfigError(f"rate must be positive, got {self.rate}")


@dataclass
class Outer:
    name: str = "x"
    size: tuple[int, int] = (2, 3)
    path: Path | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_defaults_and_nested_values():
    cfg = load_config(Outer, {"inner": {"rate": 2}, "size": [4, 5], "path": "~/x"})
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.size == (4, 5)
    assert cfg.path == Path("~/x").expanduser()
    assert to_dict(cfg)["inner"] == {"rate": 2.0, "mode": "fast"}


def test_overrides_parse_yaml_values():
    cfg = load_config(Outer, {}, ["inner.rate=0.5", "tags=[a, b]", "inner.mode=slow"])
    assert cfg.inner.rate == 0.5 and cfg.tags == ["a", "b"] and cfg.inner.mode == "slow"


@pytest.mark.parametrize("data, message", [
    ({"inner": {"rate": "fast"}}, "inner.rate: expected a number"),
    ({"inner": {"rate": -1}}, "rate must be positive"),
    ({"inner": {"mode": "medium"}}, "'medium' is not one of"),
    ({"size": [1, 2, 3]}, "size: expected 2 values"),
    ({"colour": 1}, "unknown key(s) ['colour']"),
    ({"name": True}, "name: expected a string"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(Outer, data)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [1, 2")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Outer, bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("inner:\n  rate: zero\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: inner.rate"):
        load_config(Outer, wrong)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Outer, {}, ["inner.rate"])


def test_yaml_core_schema_scalars():
    """`off` stays a string (amp: off), `3e-4` is a number; only true/false are booleans."""
    from hoi_perception.config import parse_yaml

    assert parse_yaml("off") == "off" and parse_yaml("yes") == "yes"
    assert parse_yaml("true") is True and parse_yaml("False") is False
    assert parse_yaml("3e-4") == pytest.approx(3e-4) and parse_yaml("1.0e-4") == pytest.approx(1e-4)
    cfg = load_config(Outer, {}, ["inner.rate=2e-3", "name=off"])
    assert cfg.inner.rate == pytest.approx(2e-3) and cfg.name == "off"
