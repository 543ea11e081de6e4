"""The periodic task that keeps per-user tables in user order (:mod:`service.store.layout`):
each table whose unsorted tail has grown past the threshold is written again in user order,
one short write transaction at a time, with the writer left to ingest between them."""

from __future__ import annotations

import logging
import time

import anyio
import msgspec

from service.store import Store, layout

log = logging.getLogger("agnes.layout")


class Rewrite(msgspec.Struct, frozen=True):
    """What one rewrite did: the rows it copied, and how long each step (the tail's stages,
    then the copies) and the swap held the writer (s)."""

    table: str
    rows: int
    steps: list[float]
    finish: float
    seconds: float


async def keep_user_order(
    store: Store,
    stop: anyio.Event,
    interval: float,
    tail: int | None = None,
    step_rows: int = layout.STEP_ROWS,
) -> None:
    """Drop what a killed rewrite left, then every ``interval`` seconds until ``stop`` is
    set, rewrite each kept table whose unsorted tail is due (:func:`layout.due`), in steps
    of about ``step_rows`` rows. A failure is logged and tried again next period."""
    left = await store.write(layout.drop_leftovers)
    if left:
        log.info("dropped the unfinished copies of %s a stopped rewrite left", ", ".join(left))
    while not stop.is_set():
        try:
            for table in await store.read(layout.due, tail):
                done = await rewrite(store, table, step_rows)
                log.info(
                    "%s written again in user order: %d rows in %d steps, %.1f s; the writer"
                    " held at most %.0f ms a step, %.0f ms for the swap",
                    done.table,
                    done.rows,
                    len(done.steps),
                    done.seconds,
                    max(done.steps, default=0) * 1000,
                    done.finish * 1000,
                )
        except Exception:
            log.exception("keeping the user order failed; trying again in %s s", interval)
        with anyio.move_on_after(interval):
            await stop.wait()


async def rewrite(store: Store, table: str, step_rows: int = layout.STEP_ROWS) -> Rewrite:
    """Write ``table`` again in user order; between two steps the writer stays free for at
    least as long as the step before held it, so ingest keeps at least half of it."""
    started = time.perf_counter()
    plan = await store.read(layout.plan, table, step_rows)
    await store.write(layout.begin, plan)
    held: list[float] = []
    rows = 0
    for step in range(plan.steps):
        took = time.perf_counter()
        done = await store.write(layout.step, plan, step)
        held.append(time.perf_counter() - took)
        rows += done if step >= plan.stages else 0
        await anyio.sleep(held[-1])
    took = time.perf_counter()
    await store.write(layout.finish, plan)
    finish = time.perf_counter() - took
    return Rewrite(table, rows, held, finish, time.perf_counter() - started)
