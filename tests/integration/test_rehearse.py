"""`backfilld rehearse` on real engines: what it finds on a sample (NULL, values that do not fit, expressions that
raise), what another engine computes otherwise (--against), the timed batch rolled back, and that the real table
is the same afterwards and no scratch table is left, also when the rehearsal fails half-way."""

from __future__ import annotations

import decimal
import hashlib
from typing import Any

import pytest

from backfilld import engines
from backfilld.config import Config
from backfilld.engines.base import Engine
from backfilld.rehearse import JobRehearsal, Options, Report, against_url, rehearse
from tests.conftest import MYSQL_URL, PG_URL, require_server
from tests.dbutil import TestDb

ROWS = 20_000

# the domain of an email, as each engine's form computes it: they differ on an email with two '@'
DOMAIN = {"postgresql": "lower(split_part(email, '@', 2))", "mysql": "lower(substring_index(email, '@', -1))",
          "sqlite": "lower(substr(email, instr(email, '@') + 1))"}
OTHER_SERVER = {"postgresql": MYSQL_URL, "mysql": PG_URL, "sqlite": PG_URL}


async def emails(db: TestDb, n: int = ROWS, *, target: str = "VARCHAR(100)", extra: str = "") -> str:
    """Table people: id 1..n, email u<id>@d<id % 7>.org, amount id, target dom NULL."""
    table = await db.create("people", f"id {db.int_type()} NOT NULL PRIMARY KEY, email VARCHAR(200), "
                                      f"amount DECIMAL(20,4), dom {target}{extra}")
    await db.bulk(table, ("id", "email", "amount"),
                  [(i, f"u{i}@d{i % 7}.org", i) for i in range(1, n + 1)])
    return table


def cfg(db: TestDb, table: str, set_: dict[str, Any], **job: Any) -> Config:
    return db.config([{"name": "dom", "table": table, "set": set_, **job}])


async def checksum(db: TestDb, table: str) -> str:
    rows = await db.q(f"SELECT id, email, amount, dom FROM {table} ORDER BY id")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


async def run(config: Config, *, sample: int = 1_000, against: tuple[str, ...] = ()) -> Report:
    return await rehearse(config, None, Options(sample=sample, against=tuple(against_url(a) for a in against)))


def keys(finding: dict[str, Any]) -> list[Any]:
    return [s["key"][0] for s in finding["samples"]]


async def test_a_null_at_the_end_of_the_table_is_found_and_the_table_is_unchanged(db: TestDb) -> None:
    """The rows whose expression is NULL are the table's last: a sample of the first keys would miss them, the
    spread sample does not; the timed batch wrote (and rolled back), the table holds what it held."""
    table = await emails(db)
    await db.x(f"UPDATE {table} SET email = NULL WHERE id > ?", ROWS - 3)
    before = await checksum(db, table)
    report = await run(cfg(db, table, {"dom": DOMAIN[db.engine_name]}))
    after = await checksum(db, table)
    assert before == after
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE dom IS NOT NULL")) == [(0,)]
    [job] = report.as_dict()["jobs"]
    assert job["sample"]["rows"] == 1_000 and job["sample"]["last_key"] == [ROWS]
    assert job["sample"]["method"] == "interpolated"
    [t] = job["targets"]
    assert t["null"]["count"] == 3 and keys(t["null"]) == [ROWS - 2, ROWS - 1, ROWS]
    assert t["null"]["samples"][0]["sources"] == {"email": None}
    assert t["raises"]["count"] == 0 and t["does_not_fit"]["count"] == 0
    timing = job["timing"]
    assert timing["error"] is None and timing["ranges"] >= 2 and timing["rows_written"] > 0
    assert timing["update_s_per_1000"] > 0 and timing["estimated_run_s"] > 0
    assert job["problems"] == 3 and report.problems == 3


async def test_a_clean_job_reports_nothing(db: TestDb) -> None:
    table = await emails(db, 3_000)
    report = await run(cfg(db, table, {"dom": DOMAIN[db.engine_name]}), sample=500)
    assert report.problems == 0, report.as_dict()
    assert report.as_dict()["clean"] is True


async def test_rows_in_the_middle_are_sampled_as_well(db: TestDb) -> None:
    """A stretch of problem rows a little wider than one slot's share of the keys, in the middle of the table."""
    table = await emails(db)
    await db.x(f"UPDATE {table} SET email = NULL WHERE id BETWEEN ? AND ?", 10_000, 10_250)
    report = await run(cfg(db, table, {"dom": DOMAIN[db.engine_name]}))
    [t] = report.as_dict()["jobs"][0]["targets"]
    assert t["null"]["count"] > 0
    assert all(10_000 <= k <= 10_250 for k in keys(t["null"]))


async def test_a_text_key_is_walked_and_its_end_is_sampled(db: TestDb) -> None:
    table = await db.create("named", "name VARCHAR(40) NOT NULL PRIMARY KEY, email VARCHAR(200), dom VARCHAR(100)")
    await db.bulk(table, ("name", "email"), [(f"n{i:06d}", f"u{i}@x.org") for i in range(5_000)])
    await db.x(f"UPDATE {table} SET email = NULL WHERE name = ?", "n004999")
    report = await run(db.config([{"name": "dom", "table": table, "set": {"dom": DOMAIN[db.engine_name]}}]), sample=300)
    [job] = report.as_dict()["jobs"]
    assert job["sample"]["method"] == "walked" and job["sample"]["last_key"] == ["n004999"]
    assert keys(job["targets"][0]["null"]) == ["n004999"]


async def test_an_expression_that_raises_is_found_with_its_row(db: TestDb) -> None:
    """Division by zero raises on PostgreSQL; on MariaDB a SELECT only warns, where an UPDATE under strict mode
    fails, and the rehearsal counts it as raising; SQLite's json_extract raises on text that is not JSON."""
    table = await emails(db)
    await db.x(f"UPDATE {table} SET amount = 0, email = 'not json' WHERE id = ?", ROWS - 1)
    expr = {"postgresql": "CAST(100 / amount AS text)", "mysql": "CAST(100 / amount AS CHAR)",
            "sqlite": "json_extract(CASE WHEN email = 'not json' THEN email ELSE '{\"a\": 1}' END, '$.a')"}
    engine_name = db.engine_name
    report = await run(cfg(db, table, {"dom": expr[engine_name]}))
    [t] = report.as_dict()["jobs"][0]["targets"]
    assert t["raises"]["count"] == 1 and keys(t["raises"]) == [ROWS - 1], t
    err = t["raises"]["samples"][0]["error"]
    assert {"postgresql": "division by zero", "mysql": "Division by 0", "sqlite": "malformed JSON"}[engine_name] in err
    sources = t["raises"]["samples"][0]["sources"]
    assert sources == ({"email": "not json"} if engine_name == "sqlite" else {"amount": "0.0000"})
    # the run would fail on that row: so does the timed batch, if it met it (it times the table's end)
    timing = report.as_dict()["jobs"][0]["timing"]
    assert timing["error"] is not None and "batch statement fails" in timing["error"]


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_mariadb_text_longer_than_a_varchar_10_does_not_fit(db: TestDb, engine_name: str) -> None:
    table = await emails(db, target="VARCHAR(10)")
    await db.x(f"UPDATE {table} SET email = 'x@averyveryverylongdomain.org' WHERE id IN (?, ?)", ROWS - 5, ROWS)
    report = await run(cfg(db, table, {"dom": DOMAIN["mysql"]}))
    [job] = report.as_dict()["jobs"]
    [t] = job["targets"]
    assert t["does_not_fit"]["count"] == 2 and keys(t["does_not_fit"]) == [ROWS - 5, ROWS]
    s = t["does_not_fit"]["samples"][0]
    assert s["value"] == "averyveryverylongdomain.org" and "too long for varchar(10): 27 characters" in s["reason"]
    assert "strict" in job["mode"]
    assert "Data too long" in job["timing"]["error"]   # the timed batch met it, as the run would


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_mariadb_integer_range_rounding_and_charset(db: TestDb, engine_name: str) -> None:
    """A TINYINT's range, DECIMAL(5,2)'s rounding, and a latin1 column given an emoji."""
    table = await db.create("nums", "id INT NOT NULL PRIMARY KEY, v DECIMAL(10,3), t VARCHAR(20), small TINYINT, "
                                    "money DECIMAL(5,2), lat VARCHAR(20) CHARACTER SET latin1")
    await db.bulk(table, ("id", "v", "t"), [(1, 5, "plain"), (2, 300, "naïve"), (3, 1.234, "emoji 😀"),
                                             (4, 99999, "x")])
    config = db.config([{"name": "small", "table": table, "set": {"small": "v"}},
                        {"name": "money", "table": table, "set": {"money": "v"}},
                        {"name": "lat", "table": table, "set": {"lat": "t"}}])
    report = (await run(config, sample=10)).as_dict()
    fits = {j["job"]: {s["key"][0]: s["reason"] for s in j["targets"][0]["does_not_fit"]["samples"]}
            for j in report["jobs"]}
    assert fits["small"] == {2: "out of range for tinyint(4)", 3: "rounded: stored as 1",
                             4: "out of range for tinyint(4)"}
    assert fits["money"] == {3: "rounded: stored as 1.23", 4: "out of range for decimal(5,2)"}
    assert fits["lat"] == {3: "holds characters latin1 cannot hold"}   # naïve is latin1 too


@pytest.mark.parametrize("engine_name", ["postgresql"])
async def test_postgresql_numeric_overflow_and_integer_range_do_not_fit(db: TestDb, engine_name: str) -> None:
    table = await db.create("nums", "id bigint PRIMARY KEY, v numeric, money numeric(5,2), i integer, "
                                    "code varchar(3)")
    await db.bulk(table, ("id", "v"), [(i + 1, decimal.Decimal(v)) for i, v in
                                       enumerate(("5", "123456", "1.234", "3000000000", "42"))])
    config = db.config([{"name": "money", "table": table, "set": {"money": "v"}},
                        {"name": "i", "table": table, "set": {"i": "v"}},
                        {"name": "code", "table": table, "set": {"code": "CAST(v AS text)"}}])
    report = (await run(config, sample=10)).as_dict()
    fits = {j["job"]: {s["key"][0]: s["reason"] for s in j["targets"][0]["does_not_fit"]["samples"]}
            for j in report["jobs"]}
    assert fits["money"][3] == "stored as 1.23 (numeric(5,2))"
    assert "numeric field overflow" in fits["money"][2] and "numeric field overflow" in fits["money"][4]
    assert fits["i"][3] == "stored as 1 (integer)" and "integer out of range" in fits["i"][4]
    assert fits["code"] == {2: "too long for character varying(3): 6 characters",
                            3: "too long for character varying(3): 5 characters",
                            4: "too long for character varying(3): 10 characters"}
    money = next(j for j in report["jobs"] if j["job"] == "money")
    assert "numeric field overflow" in money["timing"]["error"]


@pytest.mark.parametrize(("engine_name", "other"), [("postgresql", "sqlite"), ("mysql", "sqlite"),
                                                   ("sqlite", "server"), ("postgresql", "server"), ("mysql", "server")])
async def test_two_engines_split_an_email_with_two_at_signs_differently(db: TestDb, other: str) -> None:
    """Each engine's form of "the email's domain" agrees on every ordinary email and disagrees on one with two
    '@': PostgreSQL's split_part gives the middle part, MySQL's substring_index the last, SQLite's substr
    everything after the first."""
    url = "sqlite" if other == "sqlite" else OTHER_SERVER[db.engine_name]
    if url != "sqlite":
        require_server(url)
    against = against_url(url).engine
    table = await emails(db)
    await db.x(f"UPDATE {table} SET email = 'a@b@c.org' WHERE id = ?", ROWS)
    report = await run(cfg(db, table, {"dom": DOMAIN}), against=(url,))
    [job] = report.as_dict()["jobs"]
    [a] = job["against"]
    assert a["engine"] == against and a["rows"] == 1_000 and a["not_copied"]["count"] == 0
    [t] = a["targets"]
    assert t["expression"] == DOMAIN[against] and t["error"] is None
    assert t["compared"] == 1_000 and t["disagree"]["count"] == 1, t
    [s] = t["disagree"]["samples"]
    split = {"postgresql": "b", "mysql": "c.org", "sqlite": "b@c.org"}
    assert s["key"] == [ROWS] and s["sources"] == {"email": "a@b@c.org"}
    assert (s["real"], s["against"]) == (split[db.engine_name], split[against])
    assert report.problems == 1


async def test_against_an_engine_the_job_has_no_form_for_is_reported(db: TestDb) -> None:
    table = await emails(db, 100)
    config = cfg(db, table, {"dom": {db.engine_name: DOMAIN[db.engine_name]}})
    other = "sqlite" if db.engine_name != "sqlite" else OTHER_SERVER["sqlite"]
    if other != "sqlite":
        require_server(other)
    report = await run(config, sample=50, against=(other,))
    [t] = report.as_dict()["jobs"][0]["against"][0]["targets"]
    assert "has no" in t["error"] and report.problems == 1


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])   # a server's function SQLite lacks
async def test_an_expression_that_does_not_exist_on_the_other_engine_is_reported(db: TestDb) -> None:
    table = await emails(db, 100)
    expr = {"postgresql": "split_part(email, '@', 2)", "mysql": "substring_index(email, '@', -1)"}[db.engine_name]
    report = await run(cfg(db, table, {"dom": expr}), sample=50, against=("sqlite",))
    [t] = report.as_dict()["jobs"][0]["against"][0]["targets"]
    assert "no such function" in t["error"] and t["compared"] == 0


async def scratch_left(engine: Engine, name: str) -> bool:
    """Whether this connection still sees its temporary table `name`."""
    try:
        schema = {"postgresql": "pg_temp.", "mysql": "", "sqlite": "temp."}[engine.name]
        await engine.fetch(f"SELECT 1 FROM {schema}{name} LIMIT 1")
    except Exception:  # noqa: BLE001 - no such table
        return False
    return True


@pytest.mark.parametrize(("engine_name", "other"), [("sqlite", "sqlite"), ("postgresql", "sqlite"),
                                                   ("mysql", "sqlite"), ("postgresql", "server"), ("mysql", "server")])
async def test_the_scratch_table_is_dropped_when_the_comparison_fails_half_way(
        db: TestDb, other: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the sample was copied (here: the comparison itself raising): the error reaches the caller,
    the scratch table is dropped on the other engine before its connection closes (checked on that connection),
    and nothing of it is left afterwards."""
    url = "sqlite" if other == "sqlite" else OTHER_SERVER[db.engine_name]
    if url != "sqlite":
        require_server(url)
    table = await emails(db, 500)
    seen: dict[str, bool] = {}
    created = engines.create

    def spying(u: Any, **kw: Any) -> Engine:
        engine = created(u, **kw)
        close = engine.close

        async def checked_close() -> None:
            if "before_close" not in seen and engine._conn is not None:  # type: ignore[attr-defined]
                seen["before_close"] = await scratch_left(engine, table)
            await close()

        engine.close = checked_close  # type: ignore[method-assign]
        return engine

    async def broken(self: JobRehearsal, *args: Any) -> Any:
        seen["copied"] = await scratch_left(args[0], table)
        raise RuntimeError("the comparison broke")

    monkeypatch.setattr("backfilld.rehearse.engines.create", spying)
    monkeypatch.setattr(JobRehearsal, "against_target", broken)
    with pytest.raises(RuntimeError, match="the comparison broke"):
        await run(cfg(db, table, {"dom": DOMAIN}), sample=100, against=(url,))
    assert seen == {"copied": True, "before_close": False}
    if url.startswith("postgresql"):   # another session's view of the catalog: no temporary table of that name
        pg = TestDb(url, db.suffix)
        await pg.open()
        try:
            left = await pg.q("SELECT count(*) FROM pg_class WHERE relname = ? AND relpersistence = 't'", table)
        finally:
            await pg.engine.close()
        assert left == [(0,)]
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE dom IS NOT NULL")) == [(0,)]


async def test_a_python_transform_is_called_on_the_sample(db: TestDb) -> None:
    """NULLs, a raise, and (on the servers) values too long for the column."""
    table = await emails(db, 2_000, target="VARCHAR(12)")
    await db.x(f"UPDATE {table} SET email = NULL WHERE id = 2000")
    await db.x(f"UPDATE {table} SET email = 'raise@x.org' WHERE id = 1999")
    await db.x(f"UPDATE {table} SET email = 'long@averyverylongdomain.org' WHERE id = 1998")
    config = db.config([{"name": "dom", "table": table, "transform": "tests.fixtures.transforms:rehearsal_domain",
                         "sources": ["email"], "targets": ["dom"]}])
    report = (await run(config, sample=300)).as_dict()   # runs of 3 rows: the last is 1998..2000
    [job] = report["jobs"]
    assert job["kind"] == "transform"
    [t] = job["targets"]
    assert keys(t["null"]) == [2000]
    assert keys(job["transform_raises"]) == [1999] and "ValueError" in job["transform_raises"]["samples"][0]["error"]
    if db.engine_name == "sqlite":
        assert t["does_not_fit"]["count"] == 0 and "not checked" in t["fit_not_checked"]
    else:
        assert keys(t["does_not_fit"]) == [1998], t
        assert "too long" in t["does_not_fit"]["samples"][0]["reason"]
    assert job["timing"]["ranges"] >= 1
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE dom IS NOT NULL")) == [(0,)]
