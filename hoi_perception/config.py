"""Typed configuration: YAML files under config/ loaded into dataclasses.

Every config section is a (possibly nested) dataclass. ``load_config`` builds it
from a YAML file or a dict, applies ``key.sub=value`` overrides, checks every
field's type and unknown keys, and calls the dataclass's ``validate()`` hook when
it has one, so a bad file fails at start with a message naming the file and key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

PACKAGE_ROOT = Path(__file__).resolve().parent


# colcon (CMakeLists.txt) installs the Python packages to <prefix>/lib/pythonX.Y/site-packages
# and config/ to <prefix>/share/hoi_perception/config.
_INSTALL_PREFIX = PACKAGE_ROOT.parents[3] if len(PACKAGE_ROOT.parents) > 3 else PACKAGE_ROOT.parent
# config/ lives beside the packages in a source checkout and under share/ in an installed
# ROS package; pip installs ship a copy inside the package.
_CONFIG_CANDIDATES = (PACKAGE_ROOT.parent / "config", _INSTALL_PREFIX / "share" / "hoi_perception" / "config",
                      PACKAGE_ROOT / "_config")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class _CoreSchemaLoader(yaml.SafeLoader):
    """YAML with the 1.2 core schema's scalars: only true/false are booleans (so
    ``amp: off`` stays the string "off") and ``3e-4`` is a float, not a string."""


_REPLACED_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
_CoreSchemaLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """Parse YAML text with the core schema (see :class:`_CoreSchemaLoader`)."""
    return yaml.load(text, Loader=_CoreSchemaLoader)  # noqa: S506 - a SafeLoader subclass


def config_dir() -> Path:
    """The directory holding the shipped YAML files (config/)."""
    for candidate in _CONFIG_CANDIDATES:
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"shipped config directory not found; looked in {[str(c) for c in _CONFIG_CANDIDATES]}")


def resolve_config_path(path: str | Path) -> Path:
    """Resolve a config path: as given, else relative to the shipped config/ directory."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    shipped = config_dir() / p
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config file '{path}' not found (also looked in {config_dir()})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    p = resolve_config_path(path)
    try:
        data = parse_yaml(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
            node = child
        node[parts[-1]] = parse_yaml(raw)
    return data


def check_override_keys(cls: type, overrides: typing.Iterable[str]) -> None:
    """Each ``a.b.c=value`` override names a setting of dataclass ``cls``; an unknown one is blamed on
    the override (``--set``), not on the YAML file it is applied to."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        owner: Any = cls
        for part in key.split("."):
            if not (isinstance(owner, type) and dataclasses.is_dataclass(owner)):
                break  # a mapping or free-form section: its keys are checked when the value is read
            names = {f.name for f in dataclasses.fields(owner)}
            if part not in names:
                raise ConfigError(f"--set {item}: unknown setting '{key}' ('{part}' is not one of {sorted(names)})")
            hint = typing.get_type_hints(owner)[part]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            owner = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 \
                else hint


def load_config(cls: type[T], source: str | Path | dict[str, Any] | None = None,
                overrides: typing.Iterable[str] = ()) -> T:
    """Build dataclass ``cls`` from a YAML file, a dict or nothing (defaults)."""
    if source is None:
        data, origin = {}, cls.__name__
    elif isinstance(source, dict):
        data, origin = dict(source), cls.__name__
    else:
        origin = str(resolve_config_path(source))
        data = read_yaml(source)
    overrides = list(overrides)
    check_override_keys(cls, overrides)
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, f"{origin}:")


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Convert a mapping into dataclass ``cls``; ``where`` prefixes error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(where, name))
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return obj


def _join(where: str, key: Any) -> str:
    """Error-message path: 'file.yaml: a.b.c'."""
    if not where:
        return str(key)
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config dataclass (for saving the resolved config)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, _join(where, k)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    return value
