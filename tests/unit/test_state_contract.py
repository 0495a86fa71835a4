"""What application code reads from the state table (README, "What the application reads") stays as documented:
the statement's columns and their kinds, the stored status values and the timestamp format. A change here breaks
applications in every language that read the table: it must be deliberate, never a side effect."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from backfilld import state
from backfilld.engines.base import now_iso
from backfilld.status import Status

README = Path(__file__).parents[2] / "README.md"
MARKER = "<!-- the application's statement: tests/integration/test_state_contract.py runs it as written here -->"

# what the documented statement reads: column -> (kind, constraint), as state.COLUMNS declares them
READ = {"job": ("name", "NOT NULL PRIMARY KEY"), "status": ("status", "NOT NULL"), "finished_at": ("time", ""),
        "verified_at": ("time", ""), "error": ("text", "")}
# ISO 8601 UTC, milliseconds: fixed width, so that text order is time order on every engine
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z")


def statement() -> str:
    """The README's statement, as an application would copy it."""
    text = README.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1
    block = text.split(MARKER, 1)[1]
    m = re.match(r"\s*```sql\n(.*?)```", block, re.S)
    assert m, "the marker is followed by the ```sql block"
    return m.group(1).strip()


def test_the_columns_the_statement_reads_keep_their_names_and_kinds() -> None:
    declared = {c.name: (c.kind, c.constraint) for c in state.COLUMNS}
    assert {name: declared.get(name) for name in READ} == READ


def test_the_stored_statuses_are_the_four_documented() -> None:
    assert [s.value for s in Status] == ["pending", "running", "completed", "failed"]


def test_timestamps_are_fixed_width_utc_text_whose_text_order_is_time_order() -> None:
    stamp = now_iso()
    assert TIMESTAMP.match(stamp), stamp
    times = [dt.datetime(2026, 1, 9, 23, 59, 59, 999000, dt.UTC), dt.datetime(2026, 1, 10, 0, 0, 0, 1000, dt.UTC),
             dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)]
    texts = [t.isoformat(timespec="milliseconds") for t in times]
    assert all(TIMESTAMP.match(t) for t in texts) and sorted(texts) == texts


def test_the_documented_statement_reads_only_those_columns_and_values() -> None:
    sql = statement()
    assert "FROM backfilld_state" in sql and "WHERE job = 'users_email_domain'" in sql
    words = set(re.findall(r"\b[a-z_]+\b", re.sub(r"'[^']*'", "", sql)))
    keywords = {"select", "case", "when", "and", "then", "else", "end", "as", "from", "where", "phase",
                "backfilld_state"}
    assert words - keywords == set(READ)
    assert set(re.findall(r"'([a-z_]+)'", sql)) == {"completed", "verified", "users_email_domain"}
