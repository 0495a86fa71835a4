"""Live settings are declared once (backfilld/settings.py): the config file, `backfilld set` and a running job
agree on their names, types and bounds."""

from __future__ import annotations

import math

import pytest

from backfilld import settings
from backfilld.config import JobConfig, ThrottleConfig
from backfilld.models import ValidationError


def config_value(name: str, value: object) -> None:
    if name == "batch_size":
        JobConfig.model_validate({"name": "j", "table": "t", "set": {"x": "1"}, name: value})
    else:
        ThrottleConfig.model_validate({name: value})


@pytest.mark.parametrize("name", list(settings.LIVE))
def test_the_config_file_and_set_accept_and_refuse_the_same_values(name: str) -> None:
    s = settings.LIVE[name]
    inside = [s.lo + (0.5 if s.lo_open and s.type is float else 1 if s.lo_open else 0)]
    if math.isfinite(s.hi):
        inside.append(s.hi)
    outside = [s.lo - 1, s.lo] if s.lo_open else [s.lo - 1]
    if math.isfinite(s.hi):
        outside.append(s.hi + 1)
    for value in inside:
        v = s.type(value)
        config_value(name, v)
        assert settings.parse([f"{name}={v}"]) == {name: v}
    for value in outside:
        v = s.type(value)
        with pytest.raises(ValidationError):
            config_value(name, v)
        with pytest.raises(ValueError, match="out of range"):
            settings.parse([f"{name}={v}"])


def test_apply_retunes_what_each_setting_is_for() -> None:
    calls: list[tuple[str, object]] = []

    class Sizer:
        def retune(self, **kw: object) -> None:
            calls.append(("sizer", kw))

    class Gate:
        def retune_live(self, job: str | None, **kw: float) -> None:
            calls.append(("gate", kw))
            calls.append(("for job", job))

    settings.apply({"batch_size": 500, "target_batch_time_s": 0.2, "workers": 3, "max_lag_s": 2.0,
                    "busy_share": 0.5}, sizer=Sizer(), gate=Gate(), workers=lambda n: calls.append(("workers", n)),
                   job="j")
    assert calls == [("sizer", {"size": 500}), ("sizer", {"target_s": 0.2}), ("workers", 3),
                     ("gate", {"max_lag_s": 2.0, "busy_share": 0.5}), ("for job", "j")]


def test_stored_requests_that_are_not_live_settings_are_left_out() -> None:
    req = settings.parse_requests('{"set": {"workers": 2, "colour": "red"}}')
    assert req.set == {"workers": 2} and req.problems == ()
    assert settings.parse_requests("not json").problems == ("requests: not JSON",)
    assert settings.parse_requests('["a"]').problems == ("requests: not a JSON object",)
    assert settings.parse_requests("not json").as_dict() == {} and settings.parse_requests(None).as_dict() == {}


@pytest.mark.parametrize("text,problem", [
    ('{"set": {"workers": 0}}', "workers: 0 is out of range (1 to 16)"),
    ('{"set": {"batch_size": "abc"}}', "batch_size: 'abc' is not a whole number"),
    ('{"set": {"batch_size": 2.5}}', "batch_size: 2.5 is not a whole number"),
    ('{"set": {"workers": true}}', "workers: True is not a whole number"),
    ('{"set": {"max_lag_s": 1e9}}', "max_lag_s: 1000000000.0 is out of range (above 0 to 3600)"),
    ('{"set": {"max_rows_per_s": -5}}', "max_rows_per_s: -5.0 is out of range (0 to inf)"),
    ('{"set": {"max_lag_s": NaN}}', "max_lag_s: nan is out of range (above 0 to 3600)"),
    ('{"set": [1]}', "set: not a JSON object of setting: value"),
    ('{"paused": "false"}', "paused: 'false' is not true or false (a JSON boolean)"),
    ('{"paused": 1}', "paused: '1' is not true or false (a JSON boolean)"),
])
def test_a_stored_request_out_of_bounds_is_named_and_left_out(text: str, problem: str) -> None:
    """The state table's requests are checked with the same bounds as `backfilld set` and the config."""
    req = settings.parse_requests(text)
    assert req.problems == (problem,)
    assert req.set == {} and req.paused is None and req.as_dict() == {}


def test_the_valid_parts_of_a_stored_request_stand() -> None:
    req = settings.parse_requests('{"paused": true, "set": {"workers": 0, "batch_size": 500, "max_lag_s": "2"}}')
    assert req.paused is True and req.paused_valid and req.set == {"batch_size": 500, "max_lag_s": 2.0}
    assert req.problems == ("workers: 0 is out of range (1 to 16)",)
    assert not settings.parse_requests('{"paused": "yes"}').paused_valid
    # text unreadable as a whole leaves a pause in force too (it does not read as "resume")
    assert not settings.parse_requests("not json").paused_valid and not settings.parse_requests("[]").paused_valid
