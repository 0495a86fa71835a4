"""Validated, frozen records built from plain data (a TOML file's tables): what config.py's sections are made of.

Owns: turning the annotations of a `Model` subclass (str, int, float, bool, Literal, X | None, list[X],
dict[str, X], unions of these, nested models, and `Annotated[..., Bound(...)]`) into checks, running them, and
collecting every problem with its location, as pydantic would: the same lax conversions (3.0 -> 3, "yes" ->
True, a tuple -> a list), the same messages ("Input should be greater than or equal to 1") and the same order,
then the `field_validator`s of each valid field, then the `model_validator`s of a model whose fields are all
valid. Delegates nothing; imports nothing of backfilld's.

Why not pydantic itself: importing it and building the config's models cost `status` more than the 0.2 s it
may take in all (issue 14); a Model is a frozen dataclass (dataclasses, typing), and checking a config takes
microseconds. Only what config.py uses is here: each model forbids unknown keys; validators run on given values,
never on defaults; `model_copy(update=...)` copies without checking, as pydantic's does; and an attribute kept
beside the fields (a ClassVar default, set with object.__setattr__: a job's origin) is copied with them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar, Union, dataclass_transform, get_args, get_origin

M = TypeVar("M", bound="Model")
Loc = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Bound:
    """Limits of a number: Annotated[int, Bound(ge=1, le=1000)]."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> tuple[str, str] | None:
        """(kind, message) of the first limit the value breaks, in pydantic's order (which decides what a NaN
        is told: le, lt, ge, gt); None within them all."""
        if self.le is not None and not value <= self.le:
            return "less_than_equal", f"Input should be less than or equal to {_num(self.le)}"
        if self.lt is not None and not value < self.lt:
            return "less_than", f"Input should be less than {_num(self.lt)}"
        if self.ge is not None and not value >= self.ge:
            return "greater_than_equal", f"Input should be greater than or equal to {_num(self.ge)}"
        if self.gt is not None and not value > self.gt:
            return "greater_than", f"Input should be greater than {_num(self.gt)}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e16 else str(x)


class ValidationError(ValueError):
    """Every problem found, each a dict with loc (a path of keys and indexes), msg and type, as pydantic's
    ValidationError.errors() gives them."""

    def __init__(self, title: str, problems: list[dict[str, Any]]) -> None:
        self.title = title
        self._problems = problems
        super().__init__(f"{len(problems)} validation error(s) for {title}: "
                         + "; ".join(f"{'.'.join(map(str, p['loc'])) or '(top)'}: {p['msg']}" for p in problems))

    def errors(self, **_ignored: Any) -> list[dict[str, Any]]:
        return [dict(p) for p in self._problems]


@dataclasses.dataclass(frozen=True)
class ValidationInfo:
    """What a validator that asks for it (a second parameter) is given: the context model_validate had."""

    context: Any = None


def field_validator(*names: str) -> Callable[[Any], Any]:
    """Marks a classmethod (cls, value) or (cls, value, info) that checks the named fields once their types
    are right; it returns the value to keep, or raises ValueError (its text is the message)."""

    def mark(fn: Any) -> Any:
        target: Any = fn.__func__ if isinstance(fn, classmethod) else fn
        target.__validates__ = names
        return fn
    return mark


def model_validator(*, mode: Literal["after"]) -> Callable[[Any], Any]:
    """Marks a method (self) or (self, info) run once every field is valid; raises ValueError to refuse."""

    def mark(fn: Any) -> Any:
        fn.__validates__ = ()
        return fn
    return mark


_MISSING: Any = object()
_INVALID: Any = object()   # what a check returns once it has added its problem: never without one
Check = Callable[[Any, Loc, list[dict[str, Any]], Any], Any]   # value, loc, problems, context -> value | _INVALID


def _problem(problems: list[dict[str, Any]], loc: Loc, kind: str, msg: str) -> Any:
    problems.append({"loc": loc, "msg": msg, "type": kind})
    return _INVALID


def _validate(fn: Callable[..., Any], args: tuple[Any, ...], info: ValidationInfo, loc: Loc,
              problems: list[dict[str, Any]]) -> Any:
    """A validator's result, given info too when it takes one more parameter; _INVALID with its problem when it
    refuses (ValueError, AssertionError: pydantic's messages)."""
    try:
        return fn(*args, info) if fn.__code__.co_argcount > len(args) else fn(*args)
    except ValueError as exc:
        return _problem(problems, loc, "value_error", f"Value error, {exc}")
    except AssertionError as exc:
        return _problem(problems, loc, "assertion_error", f"Assertion failed, {exc}")


def _check_str(v: Any, loc: Loc, problems: list[dict[str, Any]], _ctx: Any) -> Any:
    return v if isinstance(v, str) else _problem(problems, loc, "string_type", "Input should be a valid string")


# Text read as a number as pydantic reads it: Unicode white space around it (not Python's str.strip() set, which
# also strips the separators \x1c-\x1f), ASCII digits only; an integer may have "_" between digits and ".0..."
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_INT_TEXT = re.compile(r"[+-]?([0-9]+(?:_[0-9]+)*)(?:\.0+)?\Z")
# the longest integer text pydantic reads (Python's own limit on converting text to int)
_INT_DIGITS = 4300
# the integers pydantic reads from a float (and tells "parsing" from "type" by, for a boolean): a signed 64-bit one
_I64 = range(-2**63, 2**63)
_TOO_BIG = ("int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size")


def _check_int(v: Any, loc: Loc, problems: list[dict[str, Any]], _ctx: Any) -> Any:
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return int(v) if int(v) in _I64 else _problem(problems, loc, *_TOO_BIG)
        if math.isfinite(v):
            return _problem(problems, loc, "int_from_float",
                            "Input should be a valid integer, got a number with a fractional part")
        return _problem(problems, loc, "finite_number", "Input should be a finite number")
    if isinstance(v, str):
        m = _INT_TEXT.match(v.strip(_SPACE))
        if m is None:
            return _problem(problems, loc, "int_parsing",
                            "Input should be a valid integer, unable to parse string as an integer")
        if len(m.group(1).replace("_", "")) > _INT_DIGITS:
            return _problem(problems, loc, *_TOO_BIG)
        return int(m.group(0).partition(".")[0].replace("_", ""))
    return _problem(problems, loc, "int_type", "Input should be a valid integer")


def _check_float(v: Any, loc: Loc, problems: list[dict[str, Any]], _ctx: Any) -> Any:
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return _problem(problems, loc, "float_type", "Input should be a valid number")
    if isinstance(v, str):
        text = v.strip(_SPACE)
        try:
            if text.isascii() and not any(c.isspace() for c in text):   # float() would take more
                return float(text)
        except ValueError:
            pass
        return _problem(problems, loc, "float_parsing",
                        "Input should be a valid number, unable to parse string as a number")
    return _problem(problems, loc, "float_type", "Input should be a valid number")


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _check_bool(v: Any, loc: Loc, problems: list[dict[str, Any]], _ctx: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in _TRUE | _FALSE:   # as written: no white space around it
        return v.lower() in _TRUE
    whole = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    if isinstance(v, str) or (whole and int(v) in _I64):   # a number that an integer could be: "parsing"
        return _problem(problems, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input")
    return _problem(problems, loc, "bool_type", "Input should be a valid boolean")


def _literal(choices: tuple[Any, ...]) -> Check:
    shown = " or ".join([", ".join(map(repr, choices[:-1])), repr(choices[-1])] if len(choices) > 1
                        else [repr(choices[0])])

    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], _ctx: Any) -> Any:
        if any(v == c and type(v) is type(c) for c in choices):
            return v
        return _problem(problems, loc, "literal_error", f"Input should be {shown}")
    return check


def _bounded(inner: Check, bound: Bound) -> Check:
    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        out = inner(v, loc, problems, ctx)
        if out is _INVALID:
            return out
        broken = bound.problem(out)
        return out if broken is None else _problem(problems, loc, *broken)
    return check


def _optional(inner: Check) -> Check:
    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        return None if v is None else inner(v, loc, problems, ctx)
    return check


def _union(members: list[tuple[str, Check]]) -> Check:
    """The first member that takes the value; else each member's problems, under its tag (pydantic's smart
    union, for the unions config.py has: members of distinct types)."""

    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        found: list[dict[str, Any]] = []
        for tag, member in members:
            mine: list[dict[str, Any]] = []
            out = member(v, (*loc, tag), mine, ctx)
            if out is not _INVALID and not mine:
                return out
            found += mine
        problems += found
        return _INVALID
    return check


def _list(item: Check) -> Check:
    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            return _problem(problems, loc, "list_type", "Input should be a valid list")
        first = len(problems)
        out = [item(x, (*loc, i), problems, ctx) for i, x in enumerate(v)]
        return _INVALID if len(problems) > first else out
    return check


def _dict(value: Check) -> Check:
    def check(v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        if not isinstance(v, dict):
            return _problem(problems, loc, "dict_type", "Input should be a valid dictionary")
        first = len(problems)
        out = {}
        for k, x in v.items():   # the key and its value each checked, as pydantic does
            if not isinstance(k, str):
                _problem(problems, (*loc, k, "[key]"), "string_type", "Input should be a valid string")
            out[k] = value(x, (*loc, k), problems, ctx)
        return _INVALID if len(problems) > first else out
    return check


def _tag(hint: Any) -> str:
    """A union member's name in a location, as pydantic writes it: "str", "dict[str,str]"."""
    origin = get_origin(hint)
    if origin is None:
        return getattr(hint, "__name__", str(hint))
    return f"{origin.__name__}[{','.join(_tag(a) for a in get_args(hint))}]"


def _checker(hint: Any) -> Check:
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Annotated:
        inner = _checker(args[0])
        for extra in args[1:]:
            if isinstance(extra, Bound):
                inner = _bounded(inner, extra)
        return inner
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        one = _checker(members[0]) if len(members) == 1 else _union([(_tag(a), _checker(a)) for a in members])
        return _optional(one) if len(members) < len(args) else one
    if origin is Literal:
        return _literal(args)
    if origin is list:
        return _list(_checker(args[0]))
    if origin is dict:
        return _dict(_checker(args[1]))
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint._check_nested
    simple = {str: _check_str, int: _check_int, float: _check_float, bool: _check_bool}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"backfilld.models: no check for the annotation {hint!r}")


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    check: Check
    default: Any           # _MISSING: required
    factory: Callable[[], Any] | None

    def is_default(self, value: Any) -> bool:
        """Whether a constructor's value is this field's default (the default itself, or what its factory
        makes: the empty list a caller did not give). Cls(field=[]) cannot be told from Cls(): both skip the
        field's validators, where model_validate({"field": []}) runs them (pydantic runs them for both)."""
        if self.factory is not None:
            return bool(type(value) is type(made := self.factory()) and value == made)
        return value is self.default


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,))
class Model:
    """A frozen record whose fields are checked from plain data: `Cls.model_validate(data, context=...)`, or
    `Cls(field=value, ...)` (checked the same way; ValidationError listing every problem)."""

    __fields: ClassVar[dict[str, _Field] | None] = None
    __field_validators: ClassVar[dict[str, list[Callable[..., Any]]]]
    __model_validators: ClassVar[list[Callable[..., Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # eq and hash are Model's (below): pydantic's, the attributes kept beside the fields compared too
        dataclasses.dataclass(frozen=True, kw_only=True, repr=True, eq=False)(cls)
        cls.__fields = None   # built on first use: the annotations may name classes defined after this one
        by_name: dict[str, Any] = {}   # a base's validators first; one a subclass redefines, replaced
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                fn = value.__func__ if isinstance(value, classmethod) else value
                if getattr(fn, "__validates__", None) is not None:
                    by_name[attr] = fn
        field_checks: dict[str, list[Callable[..., Any]]] = {}
        after: list[Callable[..., Any]] = []
        for fn in by_name.values():
            if fn.__validates__:
                for name in fn.__validates__:
                    field_checks.setdefault(name, []).append(fn)
            else:
                after.append(fn)
        names = {f.name for f in dataclasses.fields(cls)}   # type: ignore[arg-type]
        unknown = sorted(set(field_checks) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: a field_validator names {unknown[0]!r}, which is not a field")
        cls.__field_validators = field_checks
        cls.__model_validators = after

    @classmethod
    def _fields(cls) -> dict[str, _Field]:
        fields = cls.__fields
        if fields is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            fields = {}
            for f in dataclasses.fields(cls):   # type: ignore[arg-type]
                factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
                default = _MISSING if f.default is dataclasses.MISSING else f.default
                fields[f.name] = _Field(f.name, _checker(hints[f.name]), default, factory)
            cls.__fields = fields
        return fields

    @classmethod
    def model_validate(cls: type[M], data: Any, *, context: Any = None) -> M:
        problems: list[dict[str, Any]] = []
        out = cls._check_nested(data, (), problems, context)
        if out is _INVALID:
            raise ValidationError(cls.__name__, problems)
        return typing.cast(M, out)

    @classmethod
    def _check_nested(cls, v: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        if isinstance(v, cls):
            return v
        return cls._check(v, loc, problems, ctx)

    @classmethod
    def _check(cls, data: Any, loc: Loc, problems: list[dict[str, Any]], ctx: Any) -> Any:
        if not isinstance(data, dict):
            return _problem(problems, loc, "model_type", f"Input should be a valid dictionary or instance of "
                                                         f"{cls.__name__}")
        fields = cls._fields()
        values: dict[str, Any] = {}
        first = len(problems)
        info = ValidationInfo(ctx)
        for name, f in fields.items():
            if name not in data:
                if f.default is _MISSING and f.factory is None:
                    _problem(problems, (*loc, name), "missing", "Field required")
                else:
                    values[name] = f.factory() if f.factory is not None else f.default
                continue
            value = f.check(data[name], (*loc, name), problems, ctx)
            if value is _INVALID:
                continue
            for fn in cls.__field_validators.get(name, ()):
                if value is not _INVALID:
                    value = _validate(fn, (cls, value), info, (*loc, name), problems)
            values[name] = value
        for key in data:
            if not isinstance(key, str):
                _problem(problems, (*loc, key), "invalid_key", "Keys should be strings")
            elif key not in fields:
                _problem(problems, (*loc, key), "extra_forbidden", "Extra inputs are not permitted")
        if len(problems) > first:
            return _INVALID
        obj = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(obj, name, value)
        for fn in cls.__model_validators:
            if _validate(fn, (obj,), info, loc, problems) is _INVALID:
                return _INVALID
        return obj

    def __post_init__(self) -> None:
        """Cls(field=value, ...): the values checked and converted as model_validate would."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}   # type: ignore[arg-type]
        fields = type(self)._fields()
        # a default is kept as it is, unchecked (pydantic's validate_default=False); what was given is checked
        checked = type(self).model_validate({name: value for name, value in given.items()
                                             if not fields[name].is_default(value)})
        for name in given:
            object.__setattr__(self, name, getattr(checked, name))
        for attr, value in vars(checked).items():
            if attr not in given:
                object.__setattr__(self, attr, value)

    def __eq__(self, other: object) -> bool:
        """Equal when of the same class with the same fields and the same attributes kept beside them (a job's
        origin), as pydantic's models compare."""
        if type(other) is not type(self):
            return NotImplemented
        return vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, f.name) for f in dataclasses.fields(self))))  # type: ignore[arg-type]

    def __str__(self) -> str:
        """The fields as pydantic's str() shows them: `name='j' table='t' ...`."""
        return " ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def model_copy(self: M, *, update: dict[str, Any] | None = None) -> M:
        """A shallow copy with `update`'s fields replaced, unchecked (as pydantic's model_copy); attributes
        set beside the fields (a job's origin) are kept."""
        new = copy.copy(self)
        for name, value in (update or {}).items():
            object.__setattr__(new, name, value)
        return new

    def model_dump(self, *, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)   # type: ignore[arg-type]
                if f.name not in exclude}


def _dump(value: Any) -> Any:
    if isinstance(value, Model):
        return value.model_dump()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value
