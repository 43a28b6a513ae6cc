"""Text from page images with Tesseract (through pytesseract), for scanned PDFs and pictures.

OCR costs seconds a page, so each page's text is cached under the hash of the page image: a re-sync, a renamed
file or the same page in another file is never recognised twice. Loaders get an :class:`Ocr` from the caller
(or none, and then skip such files); this module knows nothing of the index beyond the cache folder it is given.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.records import SkipFile

if TYPE_CHECKING:
    from PIL.Image import Image

INSTALL_HINT = (
    "install Tesseract (as root: apt-get install tesseract-ocr tesseract-ocr-eng; `make setup` does this), "
    "then ingest again"
)
# Scans are read at this resolution: Tesseract's accuracy falls off below about 300 dpi.
DPI = 300
# A page that takes longer than this is given up on (a poster-sized image, a pathological scan).
PAGE_TIMEOUT_S = 300


@dataclass
class Ocr:
    """How to recognise page images, and what was done so far (for the ingest report)."""

    cache: Path | None = None
    languages: str = "eng"
    on_page: Callable[[int, int], None] | None = None  # (pages done, pages to do) of the file in hand
    pages: int = 0  # pages recognised by Tesseract
    cached: int = 0  # pages whose text came from the cache
    seconds: float = 0.0  # time spent in Tesseract
    _ready: bool | None = field(default=None, init=False, repr=False)

    def check(self) -> None:
        """:class:`SkipFile` ``ocr-unavailable`` with the fix, unless Tesseract and the languages are installed."""
        if self._ready is None:
            self._ready = _tesseract_has(self.languages)
        if not self._ready:
            raise SkipFile("ocr-unavailable", f"no text layer and no Tesseract with {self.languages!r}; {INSTALL_HINT}")

    def text(self, image: Image) -> str:
        """The text Tesseract reads in ``image`` (from the cache when this exact image was read before)."""
        self.check()
        key = self._key(image)
        cached = self._cache_file(key)
        if cached is not None and cached.exists():
            self.cached += 1
            return cached.read_text(encoding="utf-8")
        import pytesseract

        started = time.monotonic()
        try:
            with _one_thread():
                text = pytesseract.image_to_string(image, lang=self.languages, timeout=PAGE_TIMEOUT_S)
        except RuntimeError as e:  # pytesseract's timeout
            raise SkipFile("ocr-failed", f"{e}"[:200]) from None
        except pytesseract.TesseractError as e:
            raise SkipFile("ocr-failed", f"Tesseract: {e.message}"[:200]) from None
        self.seconds += time.monotonic() - started
        self.pages += 1
        text = text.replace("\x0c", "").strip()
        if cached is not None:
            _write_atomically(cached, text)
        return text

    def _key(self, image: Image) -> str:
        h = hashlib.sha256(f"{self.languages}|{image.mode}|{image.size}".encode())
        h.update(image.tobytes())
        return h.hexdigest()

    def _cache_file(self, key: str) -> Path | None:
        return None if self.cache is None else self.cache / key[:2] / f"{key}.txt"


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tesseract started with one OpenMP thread: its threads fight each other (and the embedder) on a machine with
    few cores, making a page many times slower (docs/formats.md). The child inherits the variable at its start;
    it is restored at once, so nothing else in this process sees it."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = before


def _tesseract_has(languages: str) -> bool:
    try:
        import pytesseract

        installed = set(pytesseract.get_languages(config=""))
    except Exception:  # not installed (TesseractNotFoundError), or a broken install
        return False
    return all(lang in installed for lang in languages.split("+"))


def _write_atomically(path: Path, text: str) -> None:
    """Never a half-written cache entry: a crash leaves the old state or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
