"""One base for the plain configuration dataclasses (training, distillation, pruning, quantization, the
pipeline, the model): defaults written once on the field, the field's checks declared beside it, unknown keys
refused with the nearest valid name, and the origin of a bad value (a file, a ``--flag``) named in the error.

    @dataclass
    class TrainConfig(ConfigBase):
        epochs: int = setting(30, at_least=1)
        crop_size: int | None = setting(256, multiple_of=32, above=0)

``ConfigBase.__post_init__`` runs ``validate()`` on every construction, so a config built in code, read from a
file (``from_dict``/``load``) or from command-line options (``from_dict(..., origins={"epochs": "--epochs"})``)
is checked the same way. ``validate()`` checks each value against its annotation (an ``int`` field refuses
``"ten"`` and ``True``; a ``float`` field takes an ``int``; a list field takes a tuple) and its ``setting``,
then runs the class's ``_check()`` for rules that tie several fields together. A class tidies values before
that in ``_prepare()`` (e.g. 0 meaning "none"). Standard library only: the runtime reads a package's model
config through it without paddle.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import types
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

CHECK = "inspector.check"  # the key of a field's checks in its dataclass metadata


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``field`` names it (None: a rule over several fields)."""

    def __init__(self, message: str, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem if problem is not None else message


@dataclass(frozen=True)
class Check:
    """What a field's value must satisfy (each bound optional); on a list, every element is checked."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    multiple_of: int | None = None
    choices: tuple[Any, ...] | None = None
    non_empty: bool = False
    note: str | None = None  # why, appended to the message in parentheses

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (a sentence without the field's name), or None."""
        if isinstance(value, (list, tuple)):
            if self.non_empty and not value:
                return self._say(f"expected at least one value, got {list(value)}")
            for item in value:
                if item is not None and self._problem_of(item) is not None:
                    return self._say(f"{self._expected()}, got {list(value)}")
            return None
        return None if value is None else self._problem_of(value)

    def _problem_of(self, value: Any) -> str | None:
        if self.choices is not None and value not in self.choices:
            return self._say(f"expected one of {self.choices}, got {value!r}")
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return None
        low_ok = ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above))
        high_ok = ((self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below))
        if not (low_ok and high_ok):
            return self._say(f"{self._expected()}, got {value}")
        if self.multiple_of and value % self.multiple_of:
            return self._say(f"{value} is not a multiple of {self.multiple_of}")
        return None

    def _expected(self) -> str:
        if self.choices is not None:
            return f"expected some of {self.choices}"
        low = self.at_least if self.at_least is not None else self.above
        high = self.at_most if self.at_most is not None else self.below
        if low is not None and high is not None:
            left = "[" if self.at_least is not None else "("
            right = "]" if self.at_most is not None else ")"
            return f"expected a value in {left}{low}, {high}{right}"
        if self.at_least is not None:
            return f"expected at least {self.at_least}"
        if self.above is not None:
            return f"expected more than {self.above}"
        if high is not None:
            return f"expected {'at most' if self.at_most is not None else 'less than'} {high}"
        return f"expected a multiple of {self.multiple_of}"

    def _say(self, problem: str) -> str:
        return f"{problem} ({self.note})" if self.note else problem


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, at_least: float | None = None,
            above: float | None = None, at_most: float | None = None, below: float | None = None,
            multiple_of: int | None = None, choices: Iterable[Any] | None = None, non_empty: bool = False,
            note: str | None = None) -> Any:
    """A dataclass field with its default and its checks side by side (see ``Check``)."""
    check = Check(at_least=at_least, above=above, at_most=at_most, below=below, multiple_of=multiple_of,
                  choices=None if choices is None else tuple(choices), non_empty=non_empty, note=note)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={CHECK: check})


def unknown_keys_message(unknown: Iterable[str], known: Iterable[str], source: str, kind: str = "option") -> str:
    """'SOURCE: unknown option 'epoch'; did you mean 'epochs'?' (several: each with its nearest valid name,
    and the valid names listed when one has none)."""
    known = sorted(known)
    unknown = sorted(unknown)
    nearest = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
    if len(unknown) == 1 and nearest[unknown[0]]:
        return f"{source}: unknown {kind} '{unknown[0]}'; did you mean '{nearest[unknown[0]][0]}'?"
    named = ", ".join(f"'{key}' (did you mean '{nearest[key][0]}'?)" if nearest[key] else f"'{key}'"
                      for key in unknown)
    message = f"{source}: unknown {kind}{'s' if len(unknown) > 1 else ''} {named}"
    if not all(nearest.values()):
        message += f"; expected some of {', '.join(known)}"
    return message


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (None: it fits, or the annotation is not one checked here)."""
    origin = typing.get_origin(annotation)
    if annotation is Any or isinstance(annotation, typing.TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if any(_type_problem(value, option) is None for option in options):
            return None
        return f"expected {_type_name(annotation)}, got {value!r}"
    if annotation is type(None):
        return None if value is None else f"expected nothing (null), got {value!r}"
    if annotation is bool:
        ok = isinstance(value, bool) or type(value).__name__ == "bool_"
    elif annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif annotation is str:
        ok = isinstance(value, str)
    elif origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"expected {_type_name(annotation)}, got {value!r}"
        args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        if origin is tuple and len(args) > 1 and len(args) == len(typing.get_args(annotation)):
            if len(value) != len(args):
                return f"expected {_type_name(annotation)}, got {value!r}"
            pairs = zip(value, args)
        else:
            pairs = ((item, args[0]) for item in value) if args else ()
        for item, arg in pairs:
            if _type_problem(item, arg) is not None:
                return f"expected {_type_name(annotation)}, got {value!r}"
        return None
    elif origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return f"expected {_type_name(annotation)}, got {value!r}"
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        if any(_type_problem(k, key_type) is not None or _type_problem(v, value_type) is not None
               for k, v in value.items()):
            return f"expected {_type_name(annotation)}, got {value!r}"
        return None
    else:
        return None  # an annotation this check does not read (a class, a Literal): the field's own checks apply
    return None if ok else f"expected {_type_name(annotation)}, got {value!r}"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "values"
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        return f"a mapping of {_type_name(key_type)} to {_type_name(value_type)}"
    if origin is not None:
        return f"a {origin.__name__} of {', '.join(_type_name(a) for a in typing.get_args(annotation))}"
    return getattr(annotation, "__name__", str(annotation))


class ConfigBase:
    """Base of the plain configuration dataclasses (see the module docstring). Subclasses set:

    - ``KIND``: how an unknown key is called in errors ("training option", "model config field");
    - ``SOURCE``: what ``from_dict`` calls the values when no file is named ("pipeline config");
    - ``ERROR``: the exception raised (a subclass of ``Exception`` taking one message), ``ConfigError`` by default.
    """

    KIND: ClassVar[str] = "option"
    SOURCE: ClassVar[str] = "config"
    ERROR: ClassVar[type[Exception]] = ConfigError

    def __post_init__(self) -> None:
        self._prepare()
        self.validate()

    def _prepare(self) -> None:
        """Tidy values before they are checked (a subclass's: 0 meaning "none", tuples from JSON lists)."""

    def _check(self) -> None:
        """Rules over several fields (a subclass's); raise ``self._invalid(field, problem)``."""

    def validate(self) -> None:
        """Check every field against its annotation and its ``setting``, then the class's own rules."""
        hints = _hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            problem = _type_problem(value, hints.get(f.name, Any))
            if problem is None and CHECK in f.metadata:
                problem = f.metadata[CHECK].problem(value)
            if problem is not None:
                raise self._invalid(f.name, problem)
        self._check()

    @classmethod
    def _invalid(cls, field: str | None, problem: str, where: str | None = None) -> Exception:
        """The class's error for ``field`` (None: several) with ``problem``; ``where`` names its origin."""
        where = where if where is not None else field
        message = f"{where}: {problem}" if where else problem
        error = cls.ERROR(message)
        error.field, error.problem = field, problem  # type: ignore[attr-defined]
        return error

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as saved (``from_dict`` reverses it)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None,
                  origins: Mapping[str, str] | None = None):
        """Build from ``values`` (a file's mapping, command-line options, or both). Unknown keys are refused
        with the nearest valid name; a missing one takes its default. A bad value's error names its origin:
        ``origins[field]`` when given (e.g. "--epochs"), else "SOURCE: field"."""
        source = source or cls.SOURCE
        origins = origins or {}
        if not isinstance(values, Mapping):
            raise cls.ERROR(f"{source}: expected a mapping of options (key: value), got {type(values).__name__}")
        cls.check_keys(values, source)
        missing = [f.name for f in fields(cls)  # type: ignore[arg-type]
                   if values.get(f.name) is None and f.default is MISSING and f.default_factory is MISSING]
        if missing:  # a required field absent or null
            raise cls.ERROR(f"{source}: {', '.join(missing)} missing")
        try:
            return cls(**values)
        except TypeError as error:
            raise cls.ERROR(f"{source}: {error}") from error
        except (ValueError, cls.ERROR) as error:
            field = getattr(error, "field", None)
            if field is None:  # a rule over several fields, or a check that did not name one
                raise cls.ERROR(f"{source}: {error}") from error
            where = origins.get(field, f"{source}: {field}")
            raise cls._invalid(field, getattr(error, "problem", str(error)), where) from error

    @classmethod
    def check_keys(cls, values: Mapping[str, Any], source: str | None = None) -> None:
        """Refuse keys that are no field of the class, naming the nearest valid one."""
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = set(values) - set(known)
        if unknown:
            raise cls.ERROR(unknown_keys_message(unknown, known, source or cls.SOURCE, cls.KIND))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str):
        """Read a config saved by ``save``; errors name the file."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise cls.ERROR(f"{path}: not valid JSON ({error})") from error
        return cls.from_dict(values, source=str(path))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls`` (cached: resolving them costs more than the checks)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]
