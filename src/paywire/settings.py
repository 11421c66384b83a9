"""One way to configure every role (seller, facilitator, buyer): a typed dataclass filled from code, a TOML
file and the environment, checked at startup with errors that name the option.

A role's config is a dataclass whose fields are declared with :func:`option`::

    @dataclass(frozen=True, slots=True)
    class SellerConfig(Settings):
        ROLE: ClassVar[str] = "seller"
        settle_timeout: float = option(60.0, check=positive, duration=True)

Sources, in rising priority (later wins): the field defaults < the TOML file < the environment < code
(keyword arguments). ``SellerConfig(...)`` is code only; :meth:`Settings.load` reads all three:

* TOML: the role's table (``[seller]``, ``[buyer]``, ``[facilitator]``; the facilitator also takes the whole
  file, its historical format), path from the argument or ``$PAYWIRE_<ROLE>_CONFIG``;
* environment: ``PAYWIRE_<ROLE>_<OPTION>`` (a field may name other variables); an empty variable is unset;
* text (environment, or a TOML string) is converted by the field's type: ``int``, ``float``, ``bool``
  (``true/false/yes/no/on/off/1/0``), tuples (comma-separated), ``Literal`` choices, and durations in
  seconds (``30``, ``1.5``, ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``).

Every value, whatever its source, is converted and checked the same way; a bad one raises ``ConfigError``
naming the option, the problem, the value and where it came from ("seller option settle_timeout: must be > 0,
got -1 (from $PAYWIRE_SELLER_SETTLE_TIMEOUT)"). Unknown option names are refused with the closest known name.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

from paywire.errors import ConfigError

__all__ = [
    "ROLES",
    "Settings",
    "UnknownOption",
    "at_least",
    "between",
    "convert",
    "gather",
    "load",
    "non_negative",
    "option",
    "parse_duration",
    "positive",
    "read_toml",
    "role_table",
    "suggest",
    "unknown_names",
]

ROLES = ("seller", "facilitator", "buyer")
T = TypeVar("T")
S = TypeVar("S", bound="Settings")
Check = Callable[[Any], str | None]
"""A field check: the problem ("must be > 0") or None when the value is fine."""

_MISSING: Any = dataclasses.MISSING


class UnknownOption(ConfigError, TypeError):
    """An option name the role does not have (also a ``TypeError``, like any unexpected keyword)."""


# -- field declaration -------------------------------------------------------------------------------------


def option(default: Any = _MISSING, *, factory: Callable[[], Any] | None = None, check: Check | None = None,
           env: str | Sequence[str] | bool = True, toml: bool = True, duration: bool = False,
           secret: bool = False, doc: str = "") -> Any:
    """A config field. ``env``: True for ``PAYWIRE_<ROLE>_<NAME>``, a name (or names, first set wins) to read
    instead, False for code only; ``toml``: False for code only (objects); ``duration``: text like ``5m`` is
    seconds; ``secret``: error messages do not show the value."""
    meta = {"check": check, "env": env, "toml": toml, "duration": duration, "secret": secret, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta, repr=not secret)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be >= {low}"

    return check


def between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be in {low}..{high}"

    return check


# -- conversion --------------------------------------------------------------------------------------------


class _Bad(Exception):
    """A value that does not fit (the message is the problem, without the option's name)."""


class _Opaque:
    """Stands for a type known only to the type checker (imported under ``TYPE_CHECKING``): any object."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """``"30"``, ``"1.5"``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` → seconds."""
    m = _DURATION.match(text)
    if m is None:
        raise _Bad("expected seconds or a duration like 500ms, 30s, 5m, 2h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _either(problems: list[str]) -> str:
    """``["expected bytes", "expected a string"]`` → ``"expected bytes or a string"``."""
    problems = list(dict.fromkeys(problems))
    if len(problems) > 1 and all(p.startswith("expected ") for p in problems):
        parts = [p.removeprefix("expected ") for p in problems]
        return "expected " + ", ".join(parts[:-1]) + " or " + parts[-1]
    return "; or ".join(problems)


def _name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, duration: bool) -> Any:
    """``value`` as a ``tp`` (text is parsed; other values must already fit); ``_Bad`` says why not."""
    if tp is Any or tp is _Opaque or tp is object:
        if tp is _Opaque and value is None:
            raise _Bad("expected an object")
        return value
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        members = typing.get_args(tp)
        if value is None:
            if type(None) in members:
                return None
            raise _Bad("must be set")
        for m in members:  # a value that already fits a member as it is wins (a str stays a str)
            if m is not type(None) and _fits(m, value):
                return _convert(m, value, duration)
        problems = []
        for m in members:
            if m is type(None):
                continue
            try:
                return _convert(m, value, duration)
            except _Bad as exc:
                problems.append(str(exc))
        raise _Bad(_either(problems))
    if value is None:
        raise _Bad("must be set")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise _Bad(f"must be one of {', '.join(repr(c) for c in choices)}")
    if origin in (tuple, list, Sequence, Iterable) or tp in (tuple, list):
        args = typing.get_args(tp)
        item = args[0] if args and (len(args) == 1 or args[1] is Ellipsis) else Any
        if isinstance(value, str):
            value = _split(value)
        if not isinstance(value, list | tuple):
            raise _Bad("expected a list")
        items = [_convert(item, v, duration) for v in value]
        return list(items) if origin is list or tp is list else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Bad("expected true or false")
    if tp is int:
        if isinstance(value, str):
            try:
                value = parse_duration(value) if duration else int(value.strip())
            except ValueError:
                raise _Bad("expected an integer") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Bad("expected an integer")
    if tp is float:
        if isinstance(value, str):
            try:
                return parse_duration(value) if duration else float(value.strip())
            except ValueError:
                raise _Bad("expected a number") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Bad("expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad("expected a string")
    if tp is bytes:
        if isinstance(value, bytes):
            return value
        raise _Bad("expected bytes")
    if isinstance(tp, type):
        if getattr(tp, "_is_protocol", False) or isinstance(value, tp):
            return value
        raise _Bad(f"expected {_name(tp)}")
    return value  # a typing construct we do not check (Callable, TypeVar …)


def _fits(tp: Any, value: Any) -> bool:
    """``value`` is already of this union member (no parsing needed)."""
    if tp is Any or tp is _Opaque or tp is object:
        return not isinstance(value, str) or tp is Any
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (tuple, list, Sequence, Iterable):
        return isinstance(value, list | tuple)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and not getattr(tp, "_is_protocol", False):
        return isinstance(value, tp)
    return False


class _Names(dict[str, Any]):
    """Locals for evaluating a field's annotation: a name only the type checker knows becomes ``_Opaque``."""

    def __init__(self, module_globals: Mapping[str, Any]) -> None:
        super().__init__()
        self._globals = module_globals

    def __missing__(self, key: str) -> Any:
        if key in self._globals or hasattr(builtins, key):
            raise KeyError(key)
        return _Opaque


_TYPES: dict[tuple[type, str], Any] = {}


def field_type(cls: type, f: dataclasses.Field[Any]) -> Any:
    """The field's annotation as a runtime type (names imported only for type checking are any object)."""
    key = (cls, f.name)
    if key not in _TYPES:
        tp: Any = f.type
        if isinstance(tp, str):
            owner = next((c for c in cls.__mro__ if f.name in getattr(c, "__annotations__", {})), cls)
            module_globals = vars(sys.modules[owner.__module__])
            try:
                tp = eval(tp, dict(module_globals), _Names(module_globals))
            except Exception:
                tp = Any
        _TYPES[key] = tp
    return _TYPES[key]


def _show(value: Any, secret: bool) -> str:
    if secret and value is not None:
        return "<hidden>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def convert(role: str, name: str, tp: Any, value: Any, *, duration: bool = False, check: Check | None = None,
            secret: bool = False, source: str = "") -> Any:
    """One value for option ``name`` of ``role``: converted to ``tp`` and checked, or ``ConfigError``."""
    try:
        out = _convert(tp, value, duration)
        problem = check(out) if check is not None and out is not None else None
    except _Bad as exc:
        problem = str(exc)
    except TypeError:  # a check that cannot compare this value
        problem = "has the wrong type"
    if problem is not None:
        where = f" (from {source})" if source else ""
        raise ConfigError(f"{role} option {name}: {problem}, got {_show(value, secret)}{where}")
    return out


def convert_field(cls: type, f: dataclasses.Field[Any], value: Any, source: str = "") -> Any:
    role = getattr(cls, "ROLE", cls.__name__)
    meta = f.metadata
    return convert(role, f.name, field_type(cls, f), value, duration=bool(meta.get("duration")),
                   check=meta.get("check"), secret=bool(meta.get("secret")), source=source)


# -- unknown names -----------------------------------------------------------------------------------------


def suggest(name: str, known: Iterable[str]) -> str | None:
    """The closest known name, if one is close."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_names(names: Iterable[str], known: Iterable[str]) -> str:
    """``"nonse (did you mean nonce?), other"``: the names, each with its closest known name."""
    known = list(known)
    parts = []
    for n in sorted(names):
        near = suggest(n, known)
        parts.append(f"{n} (did you mean {near}?)" if near else n)
    return ", ".join(parts)


# -- sources -----------------------------------------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def role_table(data: Mapping[str, Any], role: str, where: str, *, whole_file: bool = False) -> dict[str, Any]:
    """The role's ``[role]`` table; with ``whole_file`` (the facilitator's format) the top level, less the
    other roles' tables, when there is no such table."""
    table = data.get(role)
    if isinstance(table, Mapping):
        return dict(table)
    if table is not None:
        raise ConfigError(f"{where}: {role} must be a table ([{role}])")
    if whole_file:
        return {k: v for k, v in data.items() if not (k in ROLES and isinstance(v, Mapping))}
    raise ConfigError(f"{where} has no [{role}] table")


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def env_names(cls: type, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    env = f.metadata.get("env", True)
    if env is False:
        return ()
    if env is True:
        return (f"{env_prefix(cls)}{f.name.upper()}",)
    return (env,) if isinstance(env, str) else tuple(env)


def env_prefix(cls: type) -> str:
    return f"PAYWIRE_{getattr(cls, 'ROLE', cls.__name__).upper()}_"


def gather(cls: type, *, code: Mapping[str, Any] | None = None, toml: Mapping[str, Any] | None = None,
           toml_where: str = "config file", env: Mapping[str, str] | None = None,
           toml_ignore: Iterable[str] = (), env_ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The converted, checked values of ``cls``'s options set in ``toml`` < ``env`` < ``code`` (unset ones are
    absent: the defaults apply). ``*_ignore``: names the caller reads itself (TOML keys; environment
    variable suffixes after ``PAYWIRE_<ROLE>_``)."""
    role = getattr(cls, "ROLE", cls.__name__)
    fields = {f.name: f for f in _fields(cls)}
    out: dict[str, Any] = {}
    if toml:
        readable = {n for n, f in fields.items() if f.metadata.get("toml", True)}
        unknown = set(toml) - readable - set(toml_ignore)
        if unknown:
            raise ConfigError(f"{toml_where}: unknown config keys: {unknown_names(unknown, readable)}")
        for name in readable & set(toml):
            out[name] = convert_field(cls, fields[name], toml[name], toml_where)
    if env:
        prefix = env_prefix(cls)
        known_env: dict[str, str] = {}
        for name, f in fields.items():
            for var in env_names(cls, f):
                known_env[var] = name
        ignored = {prefix + s for s in env_ignore} | {prefix + "CONFIG"}
        stray = [k for k in env if k.startswith(prefix) and k not in known_env and k not in ignored]
        if stray:
            raise ConfigError(f"unknown environment variable {unknown_names(stray, [*known_env, *ignored])}")
        for name, f in fields.items():
            for var in env_names(cls, f):
                raw = env.get(var)
                if raw:
                    out[name] = convert_field(cls, f, raw, f"${var}")
                    break
    if code:
        unknown = set(code) - set(fields)
        if unknown:
            raise UnknownOption(f"unknown {role} option {unknown_names(unknown, fields)}")
        for name, value in code.items():
            out[name] = convert_field(cls, fields[name], value)
    return out


def load(cls: type[T], path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
         code: Mapping[str, Any] | None = None) -> T:
    """``cls`` from the TOML file (``path`` or ``$PAYWIRE_<ROLE>_CONFIG``), the environment (default
    ``os.environ``) and ``code``; see the module docs for the rules."""
    env = os.environ if env is None else env
    role = getattr(cls, "ROLE", cls.__name__)
    path = path or env.get(f"{env_prefix(cls)}CONFIG") or None
    table: dict[str, Any] = {}
    where = ""
    if path is not None:
        where = f"config file {path} [{role}]"
        table = role_table(read_toml(path), role, f"config file {path}")
    return cls(**gather(cls, code=code, toml=table, toml_where=where, env=env))


# -- the base class ----------------------------------------------------------------------------------------


class Settings:
    """Base of a role's config dataclass: converts and checks every field on construction."""

    __slots__ = ()
    ROLE: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Convert and check every option again (after changes to a mutable config); ``ConfigError``."""
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            converted = convert_field(type(self), f, value)
            if converted is not value and not (type(converted) is type(value) and converted == value):
                object.__setattr__(self, f.name, converted)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The option names."""
        return tuple(f.name for f in _fields(cls))

    @classmethod
    def load(cls: type[S], path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
             **code: Any) -> S:
        """From the TOML file (``path`` or ``$PAYWIRE_<ROLE>_CONFIG``), the environment and ``code``."""
        return load(cls, path, env=env, code=code)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (checked; an unknown name is :class:`UnknownOption`)."""
        unknown = set(changes) - set(self.options())
        if unknown:
            raise UnknownOption(f"unknown {self.ROLE} option {unknown_names(unknown, self.options())}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
