"""Connecting to Ray, and the terminal progress line every job shows."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

log = logging.getLogger(__name__)


#: Ray's setting (ms) for how long an idle worker process lives; the raylet reads it at start.
IDLE_WORKER_ENV = "RAY_idle_worker_killing_time_threshold_ms"


class RaySession:
    """Connect to a cluster or start a local Ray for the length of a ``with`` block.

    With no address (and no ``RAY_ADDRESS`` in the environment) a local Ray is started and shut
    down on exit, so a job leaves no Ray processes behind. When Ray is already initialised in
    this process (tests share one local cluster) it is used as it is and left running.

    Args:
        address: ``ray://host:10001``, ``host:6379`` or ``auto``; None for local or RAY_ADDRESS.
        num_cpus: CPUs of a local Ray (None: all cores).
        quiet: silence Ray Data's own progress bars and execution logs.
    """

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, quiet: bool = False
    ):
        self.address = address
        self.num_cpus = num_cpus
        self.quiet = quiet
        self._started = False

    def __enter__(self) -> RaySession:
        import ray

        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
            if address is None or address == "local":
                # "local": a Ray of this job's own, even where another process ran `ray start`
                # (a bare ray.init() would join that cluster; pass --address auto for that).
                address = "local"
                kwargs.update(include_dashboard=False, num_cpus=self.num_cpus)
                # Ray kills a worker process idle for 1 s, so a stream of small tasks (decode,
                # per-file clustering) keeps starting new ones, each importing Ray, pyarrow and
                # voxflow again: measured on 2 CPUs, 35 worker starts and 57 CPU-seconds in a
                # 1 h diarize run (147 s), 108 s with idle workers kept for a minute.
                os.environ.setdefault(IDLE_WORKER_ENV, "60000")
            ray.init(address=address, **kwargs)
            self._started = True
        configure_data_context(quiet=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        if self._started:
            ray.shutdown()


#: Ray Data's own default block size (bytes).
DEFAULT_BLOCK_BYTES = 128 * 2**20


def configure_data_context(
    quiet: bool = True,
    preserve_order: bool = True,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    object_store_bytes: float | None = None,
) -> None:
    """Ray Data settings every voxflow job runs with.

    Args:
        quiet: hide Ray Data's per-operator progress bars (voxflow prints its own line).
        preserve_order: emit rows in input order, so a job's tables are deterministic.
        max_block_bytes: largest block a task emits before handing it downstream; small blocks
            stream audio chunks to the next stage as they are decoded.
        object_store_bytes: object-store memory the pipeline's blocks may hold at once (None: no
            limit but Ray Data's own). Fast stages stop running ahead of slow ones at this
            bound, so memory does not grow with the corpus.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Ray Data logs a warning when its bars are switched off; voxflow prints its own line.
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    ctx.enable_progress_bars = not quiet
    data_logger.setLevel(level)
    ctx.execution_options.preserve_order = preserve_order
    ctx.target_max_block_size = max_block_bytes
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        object_store_memory=float("inf") if object_store_bytes is None else object_store_bytes
    )
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def console_to_log(path: str | None) -> Iterator[tuple[TextIO, bool]]:
    """Send what the process writes to its standard error (file descriptor 2) to the file
    ``path`` for the length of the block: Ray's warnings, the log lines of its C++ core worker,
    its workers' output relayed to the driver, library warnings. Yields ``(terminal, moved)``:
    a stream on the original standard error for what a person should see (the progress line),
    and whether anything was moved. Nothing is moved when ``path`` is None, or when standard
    error is not descriptor 2 (under a test runner's capture, say).
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = -1
    if path is None or fd != 2:
        yield sys.stderr, False
        return
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    with open(path, "a", encoding="utf-8") as log_file:
        os.dup2(log_file.fileno(), 2)
        try:
            yield terminal, True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()


class Progress:
    """Progress of a job: files done of total, hours, x real time, errors.

    On a terminal it is a tqdm bar redrawn in place (with the time left); in logs (not a TTY) a
    plain line is printed every 10 % or every 30 s. ``quiet`` prints nothing.

    Args:
        job: the job's name (``probe``, ``diarize``...).
        total: files expected.
        quiet: print nothing.
        stream: where to print (stderr by default).
    """

    def __init__(self, job: str, total: int, quiet: bool = False, stream: TextIO | None = None):
        self.job, self.total, self.quiet = job, total, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = self.errors = 0
        self.audio_seconds = 0.0
        self.started = time.monotonic()
        self._last_print = 0.0
        self._last_decile = -1
        self._bar = None
        if self.tty and not quiet:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=job,
                unit="file",
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.2,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files "
                "[{elapsed}<{remaining}]{postfix}",
            )

    def update(self, files: int, audio_seconds: float, errors: int) -> None:
        """Count ``files`` more files, ``audio_seconds`` more audio and ``errors`` more errors."""
        self.done += files
        self.audio_seconds += audio_seconds
        self.errors += errors
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.rates(), refresh=False)
            self._bar.update(files)
            return
        now = time.monotonic()
        decile = int(10 * self.done / max(self.total, 1))
        if decile > self._last_decile or now - self._last_print >= 30:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print, self._last_decile = now, decile

    def rates(self) -> str:
        """Hours, x real time and errors so far."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.audio_seconds / 3600:.2f} h, {self.audio_seconds / elapsed:.1f}x real time, "
            f"{self.errors} errors"
        )

    def line(self) -> str:
        """The progress text."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return f"{self.job}: {self.done}/{self.total} files, {self.rates()}, {elapsed:.0f}s"

    def close(self) -> None:
        """End the progress bar (its last state stays on the terminal)."""
        if self._bar is not None:
            self._bar.set_postfix_str(self.rates(), refresh=False)
            self._bar.close()
            self._bar = None


class JobAborted(RuntimeError):
    """A job stopped early under its error policy (``--fail-fast``, ``--max-error-rate``)."""


class ErrorPolicy:
    """When failures stop a job: ``fail_fast`` at the first failed input; otherwise when the
    share of failed inputs exceeds ``max_error_rate`` once at least ``min_files`` are done (a
    systemic failure — wrong credentials, a broken model — rather than a few bad files).

    Args:
        max_error_rate: largest tolerated share of failed inputs (1.0: never abort).
        fail_fast: abort at the first failure (for debugging).
        min_files: inputs done before the rate is judged.
    """

    def __init__(self, max_error_rate: float = 1.0, fail_fast: bool = False, min_files: int = 20):
        if not 0 <= max_error_rate <= 1:
            raise ValueError("max_error_rate must lie in [0, 1]")
        self.max_error_rate, self.fail_fast, self.min_files = max_error_rate, fail_fast, min_files
        self.done = self.failed = 0

    def record(self, failed: bool, message: str = "") -> None:
        """Count one finished input; raise :class:`JobAborted` when the policy says stop."""
        self.done += 1
        self.failed += int(failed)
        if failed and self.fail_fast:
            raise JobAborted(f"stopped at the first failure (--fail-fast): {message}")
        if self.done >= self.min_files and self.failed / self.done > self.max_error_rate:
            raise JobAborted(
                f"{self.failed} of the first {self.done} inputs failed ({100 * self.failed / self.done:.0f} %), "
                f"above --max-error-rate {100 * self.max_error_rate:.0f} %: this looks systemic; last error: {message}"
            )


def iter_while_waiting(
    items: Iterable[Any], idle: Callable[[], None], interval: float = 0.05
) -> Iterator[Any]:
    """Yield ``items`` (a Ray Data iterator, say), read one ahead by a thread of their own; while
    the next one is not there yet, call ``idle()`` every ``interval`` seconds. A driver that
    also waits on tasks of its own (diarize's per-file clustering) then commits a finished file
    while the pipeline is busy, not only when the next batch comes: measured on the demo, the
    first file was committed 1.3 s after its clustering ended. An error of the iterator is
    raised here; a consumer that stops early leaves the thread to end at its next item."""
    pipe: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                pipe.put(message, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the consumer
            offer(("error", exc))

    reader = threading.Thread(target=read, name="voxflow-reader", daemon=True)
    reader.start()
    try:
        while True:
            try:
                kind, value = pipe.get(timeout=interval)
            except queue.Empty:
                idle()
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
