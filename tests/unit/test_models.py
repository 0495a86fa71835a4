"""backfilld/models.py checks plain data as pydantic would (the config was pydantic models until their import
cost `status` its 0.2 s, issue 14): for any data, the same problems (location, message and kind, in the same
order), or the same values, compared with pydantic itself on a model of every kind of field config.py has."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, field
from typing import Annotated, Any, Literal

import pydantic
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backfilld import models


class Inner(models.Model):
    a: int = 1
    name: str | None = None


class Outer(models.Model):
    req: str
    i: Annotated[int, models.Bound(ge=1, le=10)] = 1
    f: Annotated[float, models.Bound(gt=0, le=300)] = 1.0
    g: Annotated[float, models.Bound(ge=0)] = 0
    b: bool = False
    s: str = ""
    o: str | None = None
    lst: list[str] = field(default_factory=list)
    ol: list[str] | None = None
    d: dict[str, str | dict[str, str]] = field(default_factory=dict)
    lit: Literal["stop", "skip"] = "stop"
    n: Inner = Inner()
    nn: Inner | None = None
    ln: list[Inner] = field(default_factory=list)

    @models.field_validator("s", "lst")
    @classmethod
    def _no_x(cls, v: Any) -> Any:
        if "x" in v:
            raise ValueError("holds an x")
        return v

    @models.model_validator(mode="after")
    def _order(self) -> Outer:
        if self.g > self.f:
            raise ValueError("g is above f")
        return self


class _P(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class PInner(_P):
    a: int = 1
    name: str | None = None


class POuter(_P):
    req: str
    i: Annotated[int, pydantic.Field(ge=1, le=10)] = 1
    f: Annotated[float, pydantic.Field(gt=0, le=300)] = 1.0
    g: Annotated[float, pydantic.Field(ge=0)] = 0
    b: bool = False
    s: str = ""
    o: str | None = None
    lst: list[str] = pydantic.Field(default_factory=list)
    ol: list[str] | None = None
    d: dict[str, str | dict[str, str]] = pydantic.Field(default_factory=dict)
    lit: Literal["stop", "skip"] = "stop"
    n: PInner = PInner()
    nn: PInner | None = None
    ln: list[PInner] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("s", "lst")
    @classmethod
    def _no_x(cls, v: Any) -> Any:
        if "x" in v:
            raise ValueError("holds an x")
        return v

    @pydantic.model_validator(mode="after")
    def _order(self) -> POuter:
        if self.g > self.f:
            raise ValueError("g is above f")
        return self


FIELDS = [*Outer.__dataclass_fields__, "zz"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.floats(), st.sampled_from([2.0, 0.5, 1e30, -0.0]),
    st.sampled_from(["", "x", "1", " 3 ", "2.5", "yes", "yes ", "Off", "stop", "skip", "nan", "inf", "a", "1000.0"]),
    st.text(max_size=4),
    # numbers as text: signs, "_", exponents, white space pydantic strips (and \x1c, which it does not), a
    # non-ASCII digit
    st.text(alphabet="0123456789+-._eE \t\xa0\u2003\x1c\u0662", max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "name", "b", "x", 1]), inner, max_size=3)),
    max_leaves=8)
datas = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6).map(
    lambda d: {"req": "r", **d} if "req" not in d and len(d) % 2 else d)


def canon(value: Any) -> Any:
    """Values compared with their types (1 is not 1.0 nor True), NaN equal to itself."""
    if isinstance(value, (models.Model, pydantic.BaseModel)):
        return canon(value.model_dump())
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canon(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def outcome(cls: Any, error: type[Exception], data: dict[str, Any]) -> Any:
    try:
        return "ok", canon(cls.model_validate(data))
    except error as exc:
        # the reference's classes are named P...: "instance of PInner" is "instance of Inner"
        return "problems", [(tuple(e["loc"]), e["msg"].replace(" of PInner", " of Inner"), e["type"])
                            for e in exc.errors(include_url=False)]


@hsettings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(datas)
def test_any_data_gives_the_problems_or_the_values_pydantic_gives(data: dict[str, Any]) -> None:
    assert outcome(Outer, models.ValidationError, data) == outcome(POuter, pydantic.ValidationError, data)


def test_the_comparison_sees_both_outcomes_and_every_kind_of_problem() -> None:
    """The property above is not only ever one branch: valid data gives values, and each kind of problem is met."""
    assert outcome(Outer, models.ValidationError, {"req": "r", "i": "3", "b": "yes"})[0] == "ok"
    kinds = {p[2] for data in [{"i": 0, "f": "z", "b": 2, "s": 1, "lst": "ab", "d": [], "lit": "x", "n": 1, "zz": 1},
                               {"req": "r", "s": "x"}, {"req": "r", "g": 5, "f": 2}, {"req": "r", "i": 2.5}]
             for p in outcome(Outer, models.ValidationError, data)[1]}
    assert kinds >= {"missing", "greater_than_equal", "float_parsing", "bool_parsing", "string_type", "list_type",
                     "dict_type", "literal_error", "model_type", "extra_forbidden", "value_error", "int_from_float"}


def test_a_model_is_frozen_and_its_copy_keeps_what_is_kept_beside_the_fields() -> None:
    m = Outer.model_validate({"req": "r", "i": 2})
    with pytest.raises(FrozenInstanceError):
        m.i = 3   # type: ignore[misc]
    object.__setattr__(m, "_kept", "beside")
    copied = m.model_copy(update={"i": 5})
    assert (copied.i, m.i, copied._kept) == (5, 2, "beside")   # type: ignore[attr-defined]


def test_constructing_a_model_checks_what_is_given_as_model_validate_does() -> None:
    assert Outer(req="r", i=3.0).i == 3   # type: ignore[arg-type]
    with pytest.raises(models.ValidationError) as caught:
        Outer(req="r", i=0)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("i",), "greater_than_equal")]


TEXTS = ["3", " 3 ", "+3", "-0", "03", "3.0", "3.00", "3.", ".0", "3.5", "1e3", "1.e3", "1_000", "1__0", "_1", "1_",
         "1.0_0", "0x10", "٢", "", " ", "-", "NaN", "-nan", "inf", "Infinity",
         "9" * 4300, "9" * 4301, "9" * 4300 + ".0",
         *(ch + "3" + ch for ch in [*map(chr, range(0x09, 0x0E)), *map(chr, range(0x1C, 0x21)), "\x85", "\xa0",
                                    "\u1680", "\u180e", *map(chr, range(0x2000, 0x200C)), "\u2028", "\u2029",
                                    "\u202f", "\u205f", "\u3000", "\ufeff"])]
BOOLS = ["yes", "YES", "Yes", "yes ", " yes", "true\n", "On", "t", "T", "y", "n", "no", "off", "f", "False", "1", "0",
         "2", "1.0", "0.0", "İ"]


@pytest.mark.parametrize("key,text", [*((k, t) for k in ("i", "f", "g") for t in TEXTS), *(("b", t) for t in BOOLS)],
                         ids=lambda v: ascii(v)[:24])
def test_numbers_and_booleans_given_as_text_read_as_pydantic_reads_them(key: str, text: str) -> None:
    """Which white space around a number is taken (Unicode's, not all of Python's str.strip()), "N.0" as an
    integer, ASCII digits only, and booleans exactly as written."""
    data = {"req": "r", key: text}
    assert outcome(Outer, models.ValidationError, data) == outcome(POuter, pydantic.ValidationError, data)


def test_a_model_given_where_one_is_checked_is_taken_and_shows_and_compares_as_pydantic_s() -> None:
    ours, theirs = Outer.model_validate({"req": "r", "n": {"a": 2}}), POuter.model_validate({"req": "r", "n": {"a": 2}})
    assert Outer.model_validate(ours) is ours and POuter.model_validate(theirs) is theirs
    assert str(ours) == str(theirs).replace("PInner(", "Inner(")
    same = Outer.model_validate({"req": "r", "n": {"a": 2}})
    assert same == ours and hash(same.n) == hash(ours.n)
    object.__setattr__(same, "_kept", "beside")   # a job's origin: part of what it is
    assert same != ours


def test_validators_run_on_what_is_given_not_on_defaults_and_name_real_fields() -> None:
    class NonEmpty(models.Model):
        items: list[str] = field(default_factory=list)

        @models.field_validator("items")
        @classmethod
        def _some(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("is empty")
            return v

    assert NonEmpty().items == [] and NonEmpty.model_validate({}).items == []
    with pytest.raises(models.ValidationError, match="is empty"):
        NonEmpty.model_validate({"items": []})
    with pytest.raises(TypeError, match="'itmes', which is not a field"):
        class Typo(models.Model):
            items: list[str] = field(default_factory=list)

            @models.field_validator("itmes")
            @classmethod
            def _some(cls, v: list[str]) -> list[str]:
                return v
