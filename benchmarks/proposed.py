"""Preview of the speed-ups proposed for issue #6, for `bench_backfill.py --proposed` only.

Status: 2 (a read-only "any row pending?" statement before a sweep), 4 (no heartbeat without replicas) and
5 (max_batch 100000) have landed in backfilld, so their patches below change nothing any more; 1 landed in
another form (max() and count() of the range for single-column keys, no sort). 3 (dropping the second
evaluation of the expression) did not: it would write NULL over NULL and count it as a row written.
What --proposed still measures is 1's OFFSET form and 3.

Not part of backfilld: while the contender "backfilld+proposed" runs, this patches three things in this
process (and puts them back afterwards), so that their gain can be measured before anyone changes
backfilld/ itself. Delete this file once the changes land (or are rejected).

1. lookup by OFFSET: the next batch's last key is read with
       SELECT key FROM t WHERE key > :last ORDER BY key LIMIT 1 OFFSET :n - 1
   (stops at the n-th index entry) instead of materialising n keys for count(*) OVER () and sorting them
   DESC. Only when it finds nothing (the last, partial batch of a pass) does the original statement run,
   to count that batch.
2. seek instead of a keyset sweep: a pass after the first starts with one read-only
       SELECT 1 FROM t WHERE (filter) AND (needs fill) LIMIT 1
   and ends at once when it finds nothing, instead of walking every key again with a lookup and a no-op
   UPDATE per batch. (When it finds something the pass goes on as before; a real implementation would seek
   to the next pending key from each batch's end.)
3. the expression evaluated once: pass 1's UPDATE keeps `target IS NULL` but drops `AND (expr) IS NOT NULL`,
   which made the engine compute the expression twice per row (WHERE and SET). Rows whose expression is NULL
   are then written with NULL in pass 1 (no change of value); the sweep (2.) still uses the full predicate,
   so the job's completion rule is unchanged.
(2. landed in backfilld in a9f593a (BatchPlan.any_pending), where this patch steps aside.
4. and 5. landed in backfilld in 2b757f1 -- heartbeat only while replicas exist, max_batch 100000 -- so there
they change nothing; they stay so that the preview also runs against older checkouts. 2b757f1 also reads the
batch's end with max()/count() instead of the window; 1. replaces that with the OFFSET form as well.)
4. no heartbeat without replicas (PostgreSQL): the heartbeat writer commits a row (an fsync on the primary)
   and reads pg_current_wal_lsn() every 0.1 s even when no [[replicas]] are configured and nothing streams
   from the primary; here it only writes while a replica is configured or seen in pg_stat_replication.
5. max_batch 100000 instead of 20000 (when left at its default): the sizer steers toward
   target_batch_time_s = 0.5 s, but 20,000-key batches take 0.05-0.25 s here, so the cap, not the target,
   sets the number of batches (commits, lookups, checkpoint writes).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

PATCHES = ("offset_lookup", "seek_sweep", "single_eval", "quiet_heartbeat", "max_batch_100k")


def _offset_stmt(stmt: Any) -> Any:
    """The OFFSET form of a build_lookup() statement (same placeholders, `n` now meaning n - 1)."""
    sql = stmt.sql
    inner = sql[sql.index("FROM (") + len("FROM ("):sql.rindex(") AS bf_r")]
    head, sep, _ph = inner.rpartition(" LIMIT ")
    assert sep, f"unexpected lookup statement: {sql}"
    return dataclasses.replace(stmt, sql=f"{head} LIMIT 1 OFFSET {_ph}")


def _seek_stmt(count_pending: Any) -> Any:
    sql = count_pending.sql
    assert sql.startswith("SELECT count(*) FROM "), sql
    return dataclasses.replace(count_pending, sql="SELECT 1" + sql[len("SELECT count(*)"):] + " LIMIT 1")


def _single_eval(stmt: Any, exprs: dict[str, str]) -> Any:
    sql = stmt.sql
    for expr in exprs.values():
        needle = f" AND ({expr}) IS NOT NULL)"
        if "%" in sql and "%" in expr:  # MySQL doubled literal % signs in finish()
            needle = needle.replace("%", "%%")
        sql = sql.replace(needle, ")")
    return dataclasses.replace(stmt, sql=sql)


@contextlib.contextmanager
def applied(which: tuple[str, ...] = PATCHES) -> Iterator[None]:
    from backfilld import job as jobmod
    from backfilld.engines import base

    undo: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        undo.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    if "offset_lookup" in which:
        orig_next_range = base.Engine.__dict__["next_range"]
        cache: dict[int, tuple[Any, Any]] = {}

        async def next_range(self: Any, plan: Any, after: Any, n: int) -> Any:
            forms = cache.get(id(plan))
            if forms is None:
                forms = cache[id(plan)] = (_offset_stmt(plan.lookup_first), _offset_stmt(plan.lookup_after))
            stmt = forms[0] if after is None else forms[1]
            rows = await self.fetch(stmt, {"n": n - 1, **base.key_args("lo", after)})
            if rows:
                return tuple(rows[0]), n
            return await orig_next_range(self, plan, after, n)

        patch(base.Engine, "next_range", next_range)

    if "seek_sweep" in which:
        orig_batch = jobmod.JobRunner.__dict__["_batch"]

        async def _batch(self: Any) -> Any:
            st, p = self.state, self.prepared
            seeked = self.__dict__.setdefault("_proposed_seeked", set())
            if (st.pass_no > 1 and st.last_key is None and st.pass_no not in seeked
                    and getattr(p.plan, "any_pending", None) is None  # a9f593a: backfilld does it itself
                    and p.plan.count_pending is not None and p.plan.update_after is not None):
                seeked.add(st.pass_no)
                if not await self.engine.fetch(_seek_stmt(p.plan.count_pending)):
                    return None  # nothing left to fill: the pass is over
            return await orig_batch(self)

        patch(jobmod.JobRunner, "_batch", _batch)

    if "single_eval" in which:
        orig_prepare = jobmod.prepare

        async def prepare(engine: Any, job: Any, *a: Any, **kw: Any) -> Any:
            p = await orig_prepare(engine, job, *a, **kw)
            plan = p.plan
            if plan.update_after is not None and not job.overwrite:
                p.plan = dataclasses.replace(plan, update_first=_single_eval(plan.update_first, p.exprs),
                                             update_after=_single_eval(plan.update_after, p.exprs))
            return p

        undo.append((jobmod, "prepare", orig_prepare))
        jobmod.prepare = prepare
    if "quiet_heartbeat" in which:
        from backfilld.throttle import Throttle, probes

        orig_hb, orig_att, orig_start = (probes.HeartbeatWriter.__dict__["step"],
                                         probes.AttachedReplicas.__dict__["step"], Throttle.__dict__["start"])

        async def hb_step(self: Any) -> None:
            if self.__dict__.get("_needed", True):
                await orig_hb(self)

        async def att_step(self: Any) -> None:
            await orig_att(self)
            if not self.heartbeat.__dict__.get("_configured"):
                self.heartbeat._needed = bool(self.signals)  # streaming now, or seen before (fail closed)

        async def start(self: Any) -> None:
            await orig_start(self)
            if self.heartbeat is not None:
                self.heartbeat._configured = bool(self.config.replicas)

        patch(probes.HeartbeatWriter, "step", hb_step)
        patch(probes.AttachedReplicas, "step", att_step)
        patch(Throttle, "start", start)

    if "max_batch_100k" in which:
        from backfilld import daemon

        orig_make_sizer = daemon.make_sizer

        def make_sizer(config: Any, job: Any) -> Any:
            sizer = orig_make_sizer(config, job)
            if sizer.max_size == 20_000:
                sizer.retune(max_size=100_000)
            return sizer

        undo.append((daemon, "make_sizer", orig_make_sizer))
        daemon.make_sizer = make_sizer
    try:
        yield
    finally:
        for owner, name, old in reversed(undo):
            setattr(owner, name, old)
