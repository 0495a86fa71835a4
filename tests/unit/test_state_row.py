"""The state table's rows and stored requests are read back like input: any value gives a valid one or a clear
error (StateError naming the job and column, a named problem), never a traceback. Property-based: hypothesis
generates the values someone with UPDATE on the table could store."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backfilld import settings
from backfilld.errors import StateError
from backfilld.keys import decode_key, encode_key
from backfilld.state import NAMES, JobState

GOOD = {"job": "j", "fingerprint": "f", "status": "running", "pass_no": 2, "last_key": "[7]", "rows_done": 10,
        "pass_rows": 3, "pass_scanned": 4, "error": None, "started_at": None, "updated_at": None,
        "finished_at": None, "verified_at": None, "verify_result": None, "requests": None}


def row(**changed: object) -> tuple[object, ...]:
    return tuple({**GOOD, **changed}[c] for c in NAMES)


def test_a_good_row_reads_back() -> None:
    s = JobState.from_row(row(pass_no="2", rows_done=10), "bf_state")
    assert s.pass_no == 2 and s.last_key == (7,) and s.rows_done == 10


@pytest.mark.parametrize("changed,named", [
    ({"pass_no": "abc"}, "pass_no holds 'abc', not a whole number of 1 or more"),
    ({"pass_no": 0}, "pass_no holds 0, not a whole number of 1 or more"),
    ({"rows_done": -1}, "rows_done holds -1, not a whole number of 0 or more"),
    ({"rows_done": 1.5}, "rows_done holds 1.5, not a whole number"),
    ({"pass_rows": "١٢"}, "pass_rows holds '١٢', not a whole number"),   # digits, but not ASCII ones
    ({"last_key": '{"x'}, "last_key holds '{\"x', not a key backfilld wrote"),
    ({"last_key": '"12"'}, "last_key holds '\"12\"', not a key backfilld wrote"),
    ({"last_key": '[{"dec": "abc"}]'}, "not a key backfilld wrote"),
    ({"last_key": '[{"nope": 1}]'}, "not a key backfilld wrote"),
    ({"last_key": '[[1, 2]]'}, "not a key backfilld wrote"),
    ({"last_key": "[" * 100_000}, "not a key backfilld wrote"),
    ({"status": "bogus"}, "status holds 'bogus', not one of pending, running, completed, failed"),
    ({"error": 5}, "error holds 5, not text"),
])
def test_a_bad_value_is_named_with_its_job_and_column_and_the_way_out(changed: dict, named: str) -> None:
    with pytest.raises(StateError) as err:
        JobState.from_row(row(**changed), "bf_state")
    message = str(err.value)
    assert named in message and message.startswith("bf_state: the row of job 'j' is unreadable: "), message
    assert "backfilld run CONFIG --job j --restart" in message and err.value.job == "j"


def test_a_deeply_nested_request_is_a_problem_not_a_recursion_error() -> None:
    assert settings.parse_requests("[" * 100_000).problems == ("requests: not JSON",)
    assert settings.parse_requests('{"set": ' + "[" * 100_000).problems == ("requests: not JSON",)


def test_a_long_bad_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(StateError) as err:
        JobState.from_row(row(last_key="x" * 10_000), "bf_state")
    assert len(str(err.value)) < 400


keys = st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)), min_size=1, max_size=4)


@given(keys)
def test_every_key_backfilld_writes_reads_back(key: list) -> None:
    assert decode_key(encode_key(key)) == tuple(key)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
stored_text = st.one_of(st.text(max_size=40), json_values.map(json.dumps))
column_values = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=30), stored_text)


@hsettings(max_examples=300)
@given(st.fixed_dictionaries({c: column_values for c in NAMES if c != "job"}))
def test_any_row_reads_back_or_is_a_state_error(values: dict) -> None:
    try:
        s = JobState.from_row(row(**values), "bf_state")
    except StateError as exc:
        assert "job 'j'" in str(exc)
        return
    assert s.pass_no >= 1 and s.rows_done >= 0 and s.status in ("pending", "running", "completed", "failed")
    assert s.last_key is None or isinstance(s.last_key, tuple)


@hsettings(max_examples=300)
@given(st.one_of(stored_text, st.fixed_dictionaries(
    {}, optional={"paused": json_values, "set": st.one_of(json_values, st.dictionaries(
        st.sampled_from([*settings.LIVE, "colour"]), json_values, max_size=4))}).map(json.dumps)))
def test_any_stored_request_gives_valid_settings_or_named_problems(text: str) -> None:
    req = settings.parse_requests(text)
    assert req.paused in (None, True, False)
    for name, value in req.set.items():   # what stands is within the same bounds `backfilld set` enforces
        assert settings.LIVE[name].parse(str(value)) == value
    assert all(isinstance(p, str) and p for p in req.problems)
    again = settings.parse_requests(json.dumps(req.as_dict()))
    assert again.problems == () and again.as_dict() == req.as_dict()
