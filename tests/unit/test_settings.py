"""Live settings are declared once (backfilld/settings.py): the config file, `backfilld set` and a running job
agree on their names, types and bounds."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from backfilld import settings
from backfilld.config import JobConfig, ThrottleConfig


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
    assert settings.known({"workers": 2, "colour": "red"}) == {"workers": 2}
    assert settings.parse_requests("not json") == {} and settings.parse_requests('["a"]') == {}
