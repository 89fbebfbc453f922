"""Frozen configuration dataclasses built at the node boundary from ``params:`` mappings.

This is the one place that checks parameter names and types. ``from_params`` rejects unknown
and missing keys and checks every value against the dataclass annotation (``int``, ``float``
(ints accepted), ``bool``, ``str``, ``Literal[...]``, tuples and sequences, mappings,
``X | None`` and nested frozen dataclasses); a dataclass's ``__post_init__`` is left with the
rules that tie fields together or bound their range. Errors name the full dotted path of the
value (``ddpm.sampling.sampler.guidance_scale``), the value and type received and what was
expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from synthmed.core.validation import is_int, is_number

T = TypeVar("T")


class ConfigTypeError(ValueError):
    """A parameter value does not have the type its configuration dataclass declares."""


def from_params(cls: type[T], params: Mapping[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``params``, rejecting unknown and missing keys
    and values of the wrong type.

    Lists become tuples (dataclasses are frozen and hashable), mappings are copied, ints
    given for ``float`` fields become floats and mappings given for dataclass-typed fields
    are built with ``from_params`` recursively. ``where`` is the dotted path of the block in
    error messages, e.g. ``"ingestion"`` or ``"ddpm.training"``.

    Raises:
        ValueError: naming the unknown or missing keys (with the valid ones), or the path,
            value and type of a value of the wrong type and what was expected.
    """
    return cls(**check_fields(cls, params, where))


def check_fields(cls: type, params: Mapping[str, Any] | None, where: str, *, partial: bool = False) -> dict[str, Any]:
    """The checked and converted keyword arguments of ``cls`` from ``params``.

    Args:
        partial: the block overrides another one (e.g. one modality's intensity settings
            over ``default``): missing keys are allowed.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigTypeError(
            f"Parameters '{where}' must be a mapping of keys to values, got {params!r} ({type(params).__name__})."
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(params) - set(fields))
    if unknown:
        raise ValueError(unknown_keys_message(unknown, sorted(fields), where))
    if not partial:
        missing = sorted(
            name
            for name, f in fields.items()
            if name not in params
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"Missing key(s) {missing} in parameters '{where}'.")
    hints = typing.get_type_hints(cls)
    return {name: check_value(value, hints.get(name, Any), _join(where, name)) for name, value in params.items()}


def unknown_keys_message(unknown: Sequence[str], valid: Sequence[str], where: str) -> str:
    """"Unknown key(s) [...] in parameters 'where'; valid keys: [...]", with the closest valid
    name for each misspelt one."""
    message = f"Unknown key(s) {list(unknown)} in parameters '{where}'; valid keys: {list(valid)}."
    hints = [
        f"'{key}' -> did you mean '{close[0]}'?"
        for key in unknown
        if (close := difflib.get_close_matches(key, valid, n=1, cutoff=0.6))
    ]
    return message + (" " + " ".join(hints) if hints else "")


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the annotation ``hint`` and converted (lists to tuples,
    mappings copied, ints to floats for ``float``, mappings to nested dataclasses).

    Raises:
        ConfigTypeError: naming ``where``, the value, its type and what was expected.
    """
    ok, converted = _convert(value, hint, where)
    if not ok:
        raise ConfigTypeError(
            f"Parameter '{where}' must be {describe(hint)}, got {value!r} ({type(value).__name__})."
        )
    return converted


def describe(hint: Any) -> str:
    """What ``hint`` expects, in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if hint is type(None) or hint is None:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (tuple, Sequence, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} items ({', '.join(describe(a) for a in args)})"
        item = args[0] if args else Any
        return "a list" + ("" if item is Any else f" of {_plural(item)}")
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        value = args[1] if len(args) == 2 else Any
        return "a mapping" + ("" if value is Any else f" of keys to {_plural(value)}")
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} keys"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    words = describe(hint)
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article):] + "s"
    return words


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _convert(value: Any, hint: Any, where: str) -> tuple[bool, Any]:
    """(whether ``value`` fits ``hint``, the converted value). Nested mismatches raise with
    the nested path, so the message points at the innermost wrong value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, TypeVar):
        return True, value
    if hint is type(None) or hint is None:
        return value is None, value
    if origin in (Union, types.UnionType):
        if value is None:
            return type(None) in args, value
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return _convert(value, arms[0], where)
        for arm in arms:
            try:
                ok, converted = _convert(value, arm, where)
            except ConfigTypeError:
                continue
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        # True == 1 in Python: compare types too, so `true` does not pass for a Literal[1].
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is bool:
        # numpy.bool_ (an array element) counts; ints do not (YAML `1` for a flag is a slip).
        return isinstance(value, bool) or type(value).__name__ == "bool_", value
    if hint is int:
        return is_int(value), value
    if hint is float:
        return (True, float(value)) if is_number(value) else (False, value)
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, Sequence, list) or hint in (tuple, list, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False, value
            items = args
        else:
            items = [args[0] if args else Any] * len(value)
        return True, tuple(check_value(v, h, f"{where}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            return False, value
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return True, {
            check_value(k, key_hint, f"{where} (key {k!r})"): check_value(v, value_hint, _join(where, k))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return True, value
        if isinstance(value, Mapping):
            return True, from_params(hint, value, where)
        return False, value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    # An annotation this checker does not know (a Protocol, a callable type): not checked.
    return True, value


class ConfigFileError(ValueError):
    """A configuration file is not valid YAML; the message names the file and line."""


def yaml_error_message(path: str, exc: Exception) -> str:
    """``"conf/local/credentials.yml line 3, column 5: <what is wrong>"`` (1-based, as an
    editor shows it) for a YAML error ``exc`` raised while reading ``path``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark is not None else path
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        # e.g. an unclosed quote: the problem shows at the end of the file, the cause where
        # the quoted value starts.
        context = f"{context} started at line {context_mark.line + 1}, column {context_mark.column + 1}"
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: {detail}. Fix the YAML syntax of this file (indentation, quotes, a missing ':')."


def parse_yaml_file(path: Path, shown_as: str | None = None) -> Any:
    """The YAML document in ``path`` (safe loader).

    Raises:
        ConfigFileError: naming the file (``shown_as``, e.g. relative to the project) and line.
    """
    import yaml

    text = Path(path).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(yaml_error_message(shown_as or str(path), exc)) from None


def check_yaml_files(paths: Sequence[Path], root: Path) -> None:
    """Parse every file in ``paths`` for syntax only (no construction, so tags and duplicate
    keys are left to the loader that reads them for real).

    Raises:
        ConfigFileError: one line per broken file, each naming the file relative to ``root``
            and the 1-based line.
    """
    import yaml

    fast = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: every run parses every file, ~10x faster
    problems = []
    for path in paths:
        text = Path(path).read_text()
        try:
            for _ in yaml.compose_all(text, Loader=fast):
                pass
            continue
        except yaml.YAMLError:
            pass  # parsed again below: the pure-Python parser's marks and wording are the ones documented
        try:
            for _ in yaml.compose_all(text, Loader=yaml.SafeLoader):
                pass
        except yaml.YAMLError as exc:
            shown = Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else str(path)
            problems.append(yaml_error_message(shown, exc))
    if problems:
        raise ConfigFileError("\n".join(problems))
