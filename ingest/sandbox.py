"""Files are parsed in worker processes held to :class:`~ingest.limits.Limits`: an address-space cap
(``RLIMIT_AS``), a CPU-time cap (``RLIMIT_CPU``, set afresh for each file) and a wall-clock timeout. A file that
reaches one is a :class:`SkipFile` with the reason and the setting that raises the limit; the worker that ran
out is replaced and the ingest goes on.

The pool is pebble's (per-task timeouts that kill and replace a stuck worker, which concurrent.futures cannot),
over forkserver processes: the worker never inherits the embedder's threads or memory. Workers parse the next
files while the caller embeds the previous batch. With ``workers=0`` files are parsed in this process, with
the loaders' own limits but no memory or time cap.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from multiprocessing import popen_forkserver
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path
from types import ModuleType, TracebackType

from ingest.limits import Limits, setting
from ingest.loaders import LoadedDocument, load
from ingest.ocr import Ocr
from ingest.records import SkipFile


@dataclass(frozen=True)
class Parsed:
    """One file's document, and the OCR work its parse did (for the ingest report)."""

    document: LoadedDocument
    ocr_pages: int = 0
    ocr_cached: int = 0
    ocr_seconds: float = 0.0


class Parser:
    """Parses files under ``limits``; use as a context manager (the workers stop at its end)."""

    def __init__(self, limits: Limits, ocr: Ocr | None, workers: int = 1) -> None:
        self.limits, self.workers = limits, workers
        # A worker gets the OCR settings, never the caller's progress hook or counters.
        self._ocr = None if ocr is None else replace(ocr, on_page=None, pages=0, cached=0, seconds=0.0)
        self._pool = None

    def __enter__(self) -> Parser:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close(wait=kind is None)

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            if wait:
                self._pool.close()
            else:
                self._pool.stop()
            self._pool.join()
            self._pool = None

    def submit(self, path: Path, data: bytes) -> Future[Parsed]:
        """Start parsing ``data`` (the bytes of ``path``); :meth:`result` waits for it."""
        if self.workers == 0:
            future: Future[Parsed] = Future()
            try:
                future.set_result(_parse(str(path), data, self.limits, self._ocr, sandboxed=False))
            except Exception as e:
                future.set_exception(e)
            return future
        args = (str(path), data, self.limits, self._ocr, True)
        return self._workers().schedule(_parse, args=args, timeout=self.limits.seconds)

    def result(self, future: Future[Parsed]) -> Parsed:
        """The parsed file, or :class:`SkipFile` with why not (a limit reached, a parser that crashed)."""
        from pebble import ProcessExpired

        try:
            return future.result()
        except SkipFile:
            raise
        except FutureTimeout:
            raise SkipFile(
                "too-slow", f"parsing took over {self.limits.seconds} s ({setting('seconds')} raises it)"
            ) from None
        except ProcessExpired as e:
            if e.exitcode == -signal.SIGXCPU:
                cpu = f"over {self.limits.seconds} s of CPU time ({setting('seconds')} raises it)"
                raise SkipFile("too-slow", f"parsing took {cpu}") from None
            raise SkipFile(
                "parser-crashed",
                f"the parser process died (exit {e.exitcode}); it may have needed more than its "
                f"{self.limits.memory_mb} MB ({setting('memory_mb')} raises it)",
            ) from None
        except Exception as e:  # a parser bug on one odd file must not end the run for all the others
            raise SkipFile("error", f"{type(e).__name__}: {e}"[:200]) from None

    def parse(self, path: Path, data: bytes) -> Parsed:
        return self.result(self.submit(path, data))

    def _workers(self):  # type: ignore[no-untyped-def]
        if self._pool is None:
            from pebble import ProcessPool

            context = _Context()
            # The forkserver's environment is the one of its first use; a worker takes the caller's of now (PATH
            # finds tesseract, TESSDATA_PREFIX its languages).
            initargs = (self.limits.memory_mb, dict(os.environ))
            self._pool = ProcessPool(
                max_workers=self.workers, initializer=_start_worker, initargs=initargs, context=context
            )
        return self._pool


class _Popen(popen_forkserver.Popen):
    """Starts a worker that does not run the caller's ``__main__`` again. multiprocessing would re-run a script
    in each worker, so a script calling ``Index.ingest`` without ``if __name__ == "__main__":`` (the README's
    example) would load the models in every worker and then fail; the workers need only this module."""

    def _launch(self, process_obj: ForkServerProcess) -> None:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = ModuleType("__main__")  # what the worker is told to import as main
        try:
            super()._launch(process_obj)
        finally:
            sys.modules["__main__"] = main


class _Process(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: ForkServerProcess) -> _Popen:
        return _Popen(process_obj)


class _Context(ForkServerContext):
    Process = _Process


def _start_worker(megabytes: int, environ: dict[str, str]) -> None:
    """In a new worker: the caller's environment, and an address space capped (a bomb gets MemoryError, or dies,
    instead of the machine)."""
    os.environ.clear()
    os.environ.update(environ)
    cap = megabytes << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap if hard == resource.RLIM_INFINITY else min(cap, hard)))


def _parse(path: str, data: bytes, limits: Limits, ocr: Ocr | None, sandboxed: bool) -> Parsed:
    if sandboxed:  # this file's CPU time from now on; past it the kernel sends SIGXCPU, which ends the worker
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime) + limits.seconds + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    if ocr is not None:
        ocr = replace(ocr, pages=0, cached=0, seconds=0.0)
    try:
        document = load(Path(path), data, ocr=ocr, limits=limits)
    except MemoryError:
        detail = f"parsing needed more than {limits.memory_mb} MB ({setting('memory_mb')} raises it)"
        raise SkipFile("too-large", detail) from None
    except SkipFile:
        raise
    except Exception as e:
        raise SkipFile("error", f"{type(e).__name__}: {e}"[:200]) from None
    if ocr is None:
        return Parsed(document)
    return Parsed(document, ocr.pages, ocr.cached, ocr.seconds)
