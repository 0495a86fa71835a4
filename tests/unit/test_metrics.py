"""The labelled counters exist at 0 from the first scrape, for every label value the code can give them."""

from __future__ import annotations

import re
from pathlib import Path

from backfilld import errors
from backfilld.engines.mysql import engine as mysql_engine
from backfilld.engines.postgresql import engine as pg_engine
from backfilld.metrics import BATCH_OUTCOMES, Metrics

PACKAGE = Path(errors.__file__).parent


def test_a_declared_job_exports_its_counters_at_zero() -> None:
    m = Metrics()
    m.declare("j")
    text = m.exposition().decode()
    for kind in errors.RETRY_KINDS:
        assert f'backfilld_retries_total{{backfill_job="j",kind="{kind}"}} 0.0' in text
    for kind in errors.ERROR_KINDS:
        assert f'backfilld_errors_total{{backfill_job="j",kind="{kind}"}} 0.0' in text
    for outcome in BATCH_OUTCOMES:
        assert f'backfilld_batches_total{{backfill_job="j",outcome="{outcome}"}} 0.0' in text


def test_every_kind_the_code_raises_or_counts_is_declared() -> None:
    raised = {*pg_engine._RETRY.values(), *mysql_engine._RETRY.values(), "transient"}
    counted = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        raised |= set(re.findall(r'kind="([a-z_]+)"', text))
        counted |= set(re.findall(r'errors\.labels\([^,]+, "([a-z_]+)"\)', text))
        counted |= {o for o in re.findall(r'batches\.labels\([^,]+, "([a-z_]+)"\)', text)}
    assert raised <= set(errors.RETRY_KINDS), raised - set(errors.RETRY_KINDS)
    assert counted - set(BATCH_OUTCOMES) <= set(errors.ERROR_KINDS)
    assert {"fatal", "transform", "applied", "retried", "failed"} <= counted
