"""PostgreSQL date and time codecs (engines/postgresql/engine.py): every wire number reads as a value that binds
back to that number, and a value Python can hold reads as what asyncpg's own codecs return."""

from __future__ import annotations

import datetime as dt

import pytest

from backfilld.engines.base import Unrepresentable, decode_key, encode_key
from backfilld.engines.postgresql import CODECS

DAY_US = 86_400_000_000
CODEC = {typ: (encoder, decoder) for typ, encoder, decoder in CODECS}
UTC = dt.UTC

# (type, wire number, what it reads as: a Python value or an Unrepresentable's text)
READS = [
    ("date", 0, dt.date(2000, 1, 1)),
    ("date", -730119, dt.date(1, 1, 1)),
    ("date", 2921939, dt.date(9999, 12, 31)),
    ("date", -730120, "0001-12-31 BC"),
    ("date", -2451507, "4713-01-01 BC"),
    ("date", 2921940, "10000-01-01"),
    ("date", 2**31 - 1, "infinity"),
    ("date", -2**31, "-infinity"),
    ("timestamp", 1, dt.datetime(2000, 1, 1, 0, 0, 0, 1)),
    ("timestamp", -730119 * DAY_US, dt.datetime(1, 1, 1)),
    ("timestamp", 2921940 * DAY_US - 1, dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    ("timestamp", -730119 * DAY_US - 1, "0001-12-31 23:59:59.999999 BC"),
    ("timestamp", 2921940 * DAY_US + 45_296_789_000, "10000-01-01 12:34:56.789"),
    ("timestamp", 2**63 - 1, "infinity"),
    ("timestamp", -2**63, "-infinity"),
    ("timestamptz", 0, dt.datetime(2000, 1, 1, tzinfo=UTC)),
    ("timestamptz", 2921940 * DAY_US - 1, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("timestamptz", -2451507 * DAY_US, "4713-01-01 00:00:00+00 BC"),
    ("timestamptz", 2**63 - 1, "infinity"),
    ("time", 0, dt.time(0)),
    ("time", DAY_US - 1, dt.time(23, 59, 59, 999999)),
    ("time", DAY_US, "24:00:00"),
]


@pytest.mark.parametrize(("typ", "raw", "expected"), READS, ids=[f"{t}-{r}" for t, r, _ in READS])
def test_read_and_bound_back_exactly(typ: str, raw: int, expected: object) -> None:
    encoder, decoder = CODEC[typ]
    value = decoder((raw,))
    if isinstance(expected, str):
        assert value == Unrepresentable(typ, raw, expected)
        assert str(value) == expected
    else:
        assert type(value) is type(expected) and value == expected
        if isinstance(value, dt.datetime):
            assert value.tzinfo == expected.tzinfo
    assert encoder(value) == (raw,)
    assert decode_key(encode_key([value, 1])) == (value, 1)


def test_python_limits_are_not_infinity() -> None:
    """asyncpg's own codecs bind date.min as -infinity and datetime.max as infinity; these bind them as themselves."""
    assert CODEC["date"][0](dt.date.min) == (-730119,)
    assert CODEC["date"][0](dt.date.max) == (2921939,)
    assert CODEC["timestamp"][0](dt.datetime.max) == (2921940 * DAY_US - 1,)
    assert CODEC["timestamptz"][0](dt.datetime.min.replace(tzinfo=UTC)) == (-730119 * DAY_US,)


def test_binds_what_asyncpg_binds() -> None:
    """A datetime binds as a date (its date), a date as a timestamp (its midnight), an aware datetime as
    timestamptz at its instant; an aware datetime does not bind as a timestamp, nor text as any of them."""
    assert CODEC["date"][0](dt.datetime(2000, 1, 2, 23, 0)) == (1,)
    assert CODEC["timestamp"][0](dt.date(2000, 1, 2)) == (DAY_US,)
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert CODEC["timestamptz"][0](dt.datetime(2000, 1, 1, 5, 30, tzinfo=ist)) == (0,)
    assert CODEC["time"][0](dt.time(0, 0, 1, 5)) == (1_000_005,)
    with pytest.raises(TypeError):
        CODEC["timestamp"][0](dt.datetime(2000, 1, 1, tzinfo=UTC))
    for typ in CODEC:
        with pytest.raises(TypeError):
            CODEC[typ][0]("2000-01-01")
    with pytest.raises(TypeError):   # an Unrepresentable binds only as its own type
        CODEC["timestamp"][0](Unrepresentable("date", 2**31 - 1, "infinity"))


def test_checkpoint_stores_an_unrepresentable_exactly() -> None:
    key = [Unrepresentable("date", -2**31, "-infinity"), dt.date(1, 1, 1), Unrepresentable("time", DAY_US, "24:00:00")]
    text = encode_key(key)
    assert text is not None and '"raw"' in text
    assert decode_key(text) == tuple(key)
