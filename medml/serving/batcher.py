"""Micro-batching: concurrent requests scored by one ``predict`` call.

Requests wait in a queue; one asyncio task takes as many as fit in ``max_batch`` items and
scores them together in a single worker thread (the model is never called from two threads
at once, so PyTorch keeps all cores for one batch). It waits up to ``max_wait_ms`` for more
only under load (other requests still being read, or the last batch held several
requests), so a lone client pays no added latency. While a batch runs, the next one
gathers. When the batched call fails (one bad item among good ones), each request is
scored alone, so one bad request cannot fail the others.

The task stays opaque here: items go to the pyfunc as they came (as the one column its
signature names, or as records), and one output row goes back per item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from medml.serving.holder import LoadedModel, ModelHolder

log = logging.getLogger("medml.serving")


class NoModelError(Exception):
    """No model has been loaded yet."""


class OutputMismatch(Exception):
    """The model returned a different number of rows than it was given items."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future


def model_input(loaded: LoadedModel, items: list) -> Any:
    """The items as the pyfunc takes them. When the signature names one column (imaging:
    ``image``), a one-column DataFrame (a record gives its value of that column); else a
    DataFrame of records when every item is an object, else the list itself."""
    import pandas as pd

    from medml.errors import BadInputError

    col = loaded.input_column
    if col is not None:
        values = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if col not in item:
                    raise BadInputError(f"item {i} has no {col!r} field")
                item = item[col]
            values.append(item)
        return pd.DataFrame({col: pd.Series(values, dtype=object)})
    if items and all(isinstance(i, dict) for i in items):
        return pd.DataFrame.from_records(items)
    return items


def to_records(output: Any, n_inputs: int | None = None) -> list:
    """One JSON-able value per input row of a pyfunc output. A DataFrame with a ``row``
    column holds any number of results per input (nlp: one row per entity span, naming
    its input): they are grouped as ``{"spans": [...]}`` per input, in input order."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.DataFrame) and "row" in output.columns and n_inputs is not None:
        grouped: list[list] = [[] for _ in range(n_inputs)]
        rows = output["row"].astype(int).tolist()
        for i, rec in zip(rows, output.drop(columns="row").to_dict("records"), strict=True):
            grouped[i].append(rec)
        return [{"spans": g} for g in grouped]
    if isinstance(output, pd.DataFrame):
        return output.to_dict("records")
    if isinstance(output, pd.Series | np.ndarray):
        return output.tolist()
    if isinstance(output, dict):  # named outputs of equal length
        keys = list(output)
        cols = [list(np.asarray(output[k]).tolist()) for k in keys]
        return [dict(zip(keys, row, strict=True)) for row in zip(*cols, strict=True)]
    if isinstance(output, list | tuple):
        return list(output)
    raise TypeError(f"unsupported model output type {type(output).__name__}")


def score(loaded: LoadedModel, items: list) -> list:
    """Run the model on ``items`` (in a worker thread); one record per item."""
    records = to_records(loaded.model.predict(model_input(loaded, items)), len(items))
    if len(records) != len(items):
        raise OutputMismatch(f"the model returned {len(records)} rows for {len(items)} inputs")
    return records


class MicroBatcher:
    def __init__(self, holder: ModelHolder, max_batch: int = 32, max_wait_ms: float = 5.0
                 ) -> None:
        self.holder = holder
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.arriving = 0  # requests being read or parsed: more items on their way
        self.batches = 0
        self.items = 0
        self._pending: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_jobs = 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The one thread that runs the model (created on first use)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="medml-predict")
        return self._executor

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="medml-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(NoModelError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, items: list) -> tuple[list, str]:
        """Score ``items``; returns (one record per item, the model version that scored)."""
        if self._wake is None:
            raise NoModelError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(items, future))
        self._wake.set()
        return await future

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending.popleft()]
            n = len(batch[0].items)
            deadline = loop.time() + self.max_wait
            under_load = self._last_jobs > 1
            while n < self.max_batch:
                while self._pending and n + len(self._pending[0].items) <= self.max_batch:
                    job = self._pending.popleft()
                    batch.append(job)
                    n += len(job.items)
                if self._pending or n >= self.max_batch:
                    break  # full (the next job does not fit)
                remaining = deadline - loop.time()
                if remaining <= 0 or not (self.arriving > 0 or under_load):
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = [j for j in batch if not j.future.done()]  # the client may have gone
            if batch:
                self._last_jobs = len(batch)
                try:
                    await self._run(loop, batch)
                except Exception as exc:  # a bug here must not stop the loop
                    log.exception("micro-batcher failed")
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        loaded = self.holder.current
        if loaded is None:
            for job in batch:
                job.future.set_exception(NoModelError("no model loaded yet"))
            return
        self.batches += 1
        self.items += sum(len(j.items) for j in batch)
        if len(batch) == 1:
            await self._one(loop, loaded, batch[0])
            return
        items = [i for job in batch for i in job.items]
        try:
            records = await loop.run_in_executor(self.executor, score, loaded, items)
        except Exception:  # some item is bad (or the batch is): score each request alone
            for job in batch:
                await self._one(loop, loaded, job)
            return
        start = 0
        for job in batch:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result((records[start:end], loaded.version))
            start = end

    async def _one(self, loop: asyncio.AbstractEventLoop, loaded: LoadedModel, job: _Job
                   ) -> None:
        try:
            records = await loop.run_in_executor(self.executor, score, loaded, job.items)
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result((records, loaded.version))
