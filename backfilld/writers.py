"""The workers' connections: which connection writes the next batch.

Owns: the pool of a job's writer connections (with more than one worker), opened when a batch needs one and
closed when fewer workers are wanted or the run ends. With one worker every batch is written on the job's own
connection. Delegates connecting to the engine (Engine.clone, enable_concurrent_writes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

from backfilld import trace
from backfilld.engines.base import Engine
from backfilld.errors import RetryableError


class WriterPool:
    def __init__(self, engine: Engine, *, configured: Callable[[], int], one_worker: Callable[[str], None]) -> None:
        self.engine = engine            # the job's own connection
        self.configured = configured    # the workers configured (and possible), not the busy application's one
        self.one_worker = one_worker
        self.writers: list[Engine] = []

    def is_job_connection(self, writer: object) -> bool:
        return writer is self.engine

    async def acquire(self, busy: Collection[object]) -> Engine:
        """The connection for the next batch: the job's own with one worker; else one of the workers' own
        (the job's connection meanwhile looks up ranges and reads operator requests)."""
        in_use = {id(w) for w in busy}
        # the configured workers, not the one batch at a time of a busy application: the workers' connections
        # stay open while the application is busy, for when it is not any more
        configured = self.configured()
        keep = configured if configured > 1 else 0   # one worker writes on the job's own connection
        if len(self.writers) > keep:   # fewer workers now: close the idle ones
            idle = [w for w in self.writers if id(w) not in in_use]
            for w in idle[:len(self.writers) - keep]:
                self.writers.remove(w)
                with contextlib.suppress(Exception):
                    await w.close()
        if configured == 1:
            return self.engine
        for w in self.writers:
            if id(w) not in in_use:
                return w
        return await self._open()

    async def _open(self) -> Engine:
        w = self.engine.clone("writer")
        try:
            await w.connect()
            concurrent = await w.enable_concurrent_writes()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await w.close()
            if isinstance(exc, RetryableError):
                exc.on_writer = True
            raise
        if not concurrent:   # the server changed under the job (binlog_format = STATEMENT now)
            await w.close()
            self.one_worker("the server logs statements now (binlog_format = STATEMENT)")
            raise RetryableError("workers cannot write concurrently any more; going on with one")
        self.writers.append(w)
        trace.connection(w, "writer")
        return w

    async def close(self) -> None:
        """Close every worker's connection (opened again when a later batch needs one)."""
        writers, self.writers = self.writers, []
        for w in writers:
            with contextlib.suppress(Exception):
                await w.close()
