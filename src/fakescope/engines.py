"""Scan engines: keyed inputs in, result rows out, in small batches that the driver stores.

LocalEngine overlaps decoding and face detection of the next inputs (threads; for face crops
on a GPU, worker processes) with scoring of the current batch (the calling thread); ONNX
Runtime, PyTorch and FFmpeg release the GIL, so the threads keep every core busy. RayEngine
runs the same work on Ray actors, each loading the models once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import torch

from .crops import CropPolicy
from .faces import get_detector
from .media import Limits
from .models.ensemble import WEIGHTS_DIR
from .pipeline import Analyzer, Prepared, Settings, prepare_crop
from .report import Report
from .store import Row
from .types import FakescopeError, MediaError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ScanJob:
    """An input to score: its absolute path and its key in the store."""

    path: str
    content_hash: str
    key: str


def unordered_map(
    pool: Executor, fn: Callable[[T], R], items: Iterable[T], depth: int
) -> Iterator[R]:
    """fn over items in the pool, results as soon as they finish. At most `depth` calls are
    submitted and unread at a time and items are pulled lazily, so memory stays flat on any
    input count. fn must not raise."""
    pending: set[Future] = set()
    try:
        for item in items:
            pending.add(pool.submit(fn, item))
            # Block only when full; otherwise just hand over what has finished.
            done, pending = wait(pending, None if len(pending) >= depth else 0, FIRST_COMPLETED)
            yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        for future in pending:  # the consumer stopped early (an interrupt): drop queued work
            future.cancel()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def error_message(error: BaseException) -> str:
    text = (
        str(error)
        if isinstance(error, FakescopeError)
        else f"unexpected {type(error).__name__}: {error}"
    )
    return " ".join(text.split()) or type(error).__name__


def error_row(job: ScanJob, error: BaseException) -> Row:
    """Only the input's own fault (unreadable media) is stored; any other failure may pass
    with other settings, a smaller batch or a fixed bug, so its row has no key and is not kept."""
    key = job.key if isinstance(error, MediaError) else None
    return Row(job.path, key, job.content_hash, "error", error=error_message(error))


def report_row(job: ScanJob, report: Report) -> Row:
    faces = sum(len(track.faces) for track in report.verdict.tracks)
    return Row(
        job.path,
        job.key,
        job.content_hash,
        report.label,
        report.fake_probability,
        faces,
        None,
        report.timings,
        reason=report.verdict.reason,
        credentials=report.provenance.credentials,
        credentials_origin=report.provenance.origin,
        credentials_signer=report.provenance.signer,
    )


PreparedJob = tuple[ScanJob, Prepared | Exception]  # an input, prepared or why not


def prepare_job(analyzer: Analyzer, crops: bool, job: ScanJob) -> PreparedJob:
    try:
        return job, analyzer.prepare(job.path, crops)
    except Exception as error:
        return job, error


def prepare_crop_jobs(
    policies: tuple[CropPolicy, ...], limits: Limits, trust: str | None, jobs: list[ScanJob]
) -> list[PreparedJob]:
    """`prepare_job` for face crops, in a worker process: what it returns must pickle, so an
    unexpected error comes back as a FakescopeError with its one-line message."""
    done: list[PreparedJob] = []
    for job in jobs:
        try:
            done.append((job, prepare_crop(job.path, policies, limits, trust=trust)))
        except FakescopeError as error:
            done.append((job, error))
        except Exception as error:
            done.append((job, FakescopeError(error_message(error))))
    return done


PROCESS_CHUNK = 16  # crops per task for a worker process: pickling and queues cost per task


def _one_torch_thread() -> None:
    # The processes are the parallelism: a team of threads in each would oversubscribe.
    torch.set_num_threads(1)


def score_jobs(analyzer: Analyzer, items: list[PreparedJob]) -> list[Row]:
    """Rows for prepared jobs, scored in one batch; failed preparations become error rows."""
    ready = [(job, p) for job, p in items if isinstance(p, Prepared)]
    rows = [error_row(job, p) for job, p in items if not isinstance(p, Prepared)]
    try:
        reports = analyzer.score([p for _, p in ready])
    except Exception as error:
        return rows + [error_row(job, error) for job, _ in ready]
    return rows + [report_row(job, report) for (job, _), report in zip(ready, reports)]


def load_detector_for_workers(analyzer: Analyzer) -> None:
    """Load the detector once, before worker threads or actors call it. RetinaFace gets one
    ONNX Runtime thread per call: the workers are the parallelism, and one thread per core
    in each of them oversubscribes the cores (12% slower on 2 cores)."""
    if analyzer.settings.detector == "retinaface" and analyzer.device == "cpu":
        analyzer.detector = get_detector("retinaface", threads=1)
    else:
        analyzer.detector = analyzer.detector  # loads the detector on the analyzer's device


# Faces per scoring batch (and store transaction) on a GPU. The model still runs in chunks of
# Settings.batch_size; a large batch spreads the per-batch work (a copy of the scores back,
# a transaction) over many faces. Its crops take 1024 x 3 x 224 x 224 bytes (150 MiB) on the
# device, 4 times that once normalised.
DEVICE_SCAN_BATCH = 1024


def scan_batch(settings: Settings, device: str) -> int:
    """Faces per scoring batch of a scan: the model's batch on the CPU, many on a GPU."""
    return settings.batch_size if device == "cpu" else max(settings.batch_size, DEVICE_SCAN_BATCH)


class LocalEngine:
    def __init__(
        self,
        analyzer: Analyzer,
        crops: bool,
        workers: int,
        batch: int | None = None,
        processes: bool | None = None,
    ):
        """batch: faces per scoring batch (default: scan_batch). processes: prepare face crops
        in worker processes rather than threads (default: on a GPU, where preparing them is
        all the work the CPU has: Python that holds the GIL caps threads at about one core)."""
        self.analyzer, self.crops, self.workers = analyzer, crops, workers
        self.batch = batch or scan_batch(analyzer.settings, analyzer.device)
        self.processes = crops and (analyzer.device != "cpu" if processes is None else processes)
        if not crops and workers > 1:
            load_detector_for_workers(analyzer)

    def _pool(self) -> Executor:
        if self.processes:  # spawned: a forked copy of a process running PyTorch can hang
            return ProcessPoolExecutor(
                self.workers, get_context("spawn"), initializer=_one_torch_thread
            )
        return ThreadPoolExecutor(self.workers, thread_name_prefix="fakescope-prepare")

    def _prepare(
        self, pool: Executor, jobs: Iterable[ScanJob], depth: int
    ) -> Iterator[PreparedJob]:
        if not self.processes:
            return unordered_map(pool, partial(prepare_job, self.analyzer, self.crops), jobs, depth)
        policies = tuple(self.analyzer.ensemble.crop_policies)
        prepare = partial(prepare_crop_jobs, policies, self.analyzer.limits, self.analyzer.trust)
        chunks = unordered_map(
            pool, prepare, batched(jobs, PROCESS_CHUNK), depth // PROCESS_CHUNK + 1
        )
        return (item for chunk in chunks for item in chunk)

    def run(self, jobs: Iterable[ScanJob]) -> Iterator[list[Row]]:
        size = self.batch
        # The batch being filled, plus two inputs per worker prepared ahead of the scorer.
        depth = 2 * self.workers + (size if self.crops else 1)
        items: list[PreparedJob] = []
        faces = 0
        with self._pool() as pool:
            for job, prepared in self._prepare(pool, jobs, depth):
                items.append((job, prepared))
                faces += len(prepared.faces) if isinstance(prepared, Prepared) else 0
                if faces >= size or len(items) >= size:
                    yield score_jobs(self.analyzer, items)
                    items, faces = [], 0
        if items:
            yield score_jobs(self.analyzer, items)


class ScanWorker:
    """The state of one Ray actor: an Analyzer, loaded once."""

    def __init__(self, model: str, settings: Settings, device: str, limits: Limits, crops: bool):
        self.analyzer, self.crops = Analyzer(model, settings, device, limits), crops
        if not crops:
            load_detector_for_workers(self.analyzer)

    def members(self) -> list[dict]:
        return self.analyzer.ensemble.describe()["members"]

    def run(self, jobs: list[ScanJob]) -> list[Row]:
        return score_jobs(
            self.analyzer, [prepare_job(self.analyzer, self.crops, job) for job in jobs]
        )


class RayEngine:
    """Jobs streamed to one actor per CPU of a Ray cluster, two batches in flight per actor.

    Workers read inputs by path, so on a cluster the inputs and the model must be at the same
    path on every node (shared storage); the driver checks every actor loaded the same weights.
    """

    def __init__(self, analyzer: Analyzer, crops: bool, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise FakescopeError("--engine ray needs Ray: pip install 'fakescope[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=None if address else os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # max_restarts: a worker killed by a crashing decoder comes back; its batch becomes
        # error rows.
        worker: Any = ray.remote(num_cpus=1, max_restarts=-1)(ScanWorker)
        config = Path(analyzer.ensemble.config_path).resolve()
        model = (
            config.stem if config.parent == WEIGHTS_DIR.resolve() else str(config)
        )  # shipped: by name
        self._actors = [
            worker.remote(model, analyzer.settings, analyzer.device, analyzer.limits, crops)
            for _ in range(actors)
        ]
        expected = analyzer.ensemble.describe()["members"]
        try:
            loaded = ray.get([actor.members.remote() for actor in self._actors])
        except ray.exceptions.RayError as error:
            # The cause comes last in Ray's message, after the worker's traceback.
            raise FakescopeError(
                f"Ray workers could not load the model: ...{error_message(error)[-300:]}"
            ) from None
        if any(members != expected for members in loaded):
            raise FakescopeError(
                f"Ray workers loaded other weights than {model}: give every node the same files"
            )
        self._per_task = analyzer.settings.batch_size if crops else 1

    def run(self, jobs: Iterable[ScanJob]) -> Iterator[list[Row]]:
        ray = self._ray
        in_flight: dict = {}

        def finished() -> list[Row]:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            batch = in_flight.pop(ref)
            try:
                return ray.get(ref)
            except ray.exceptions.RayError as error:
                return [
                    error_row(
                        job,
                        FakescopeError(f"{job.path}: Ray worker failed ({type(error).__name__})"),
                    )
                    for job in batch
                ]

        for i, batch in enumerate(batched(jobs, self._per_task)):
            if len(in_flight) >= 2 * len(self._actors):
                yield finished()
            in_flight[self._actors[i % len(self._actors)].run.remote(batch)] = batch
        while in_flight:
            yield finished()
