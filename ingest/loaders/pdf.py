"""PDF: the text layer page by page (pypdf), ruled tables as Markdown rows (pdfplumber), and OCR for pages that
have no text layer (pypdfium2 renders them, :mod:`ingest.ocr` reads them)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.limits import Limits, setting
from ingest.loaders.document import LoadedDocument, TextBuilder
from ingest.loaders.tables import clean_rows, row_blocks, rows_label
from ingest.ocr import DPI, Ocr
from ingest.records import SkipFile

if TYPE_CHECKING:
    from PIL.Image import Image

# Renders are capped at this many pixels on a side: a poster-sized page at 300 dpi would need gigabytes.
MAX_RENDER_SIDE = 6000


def load_pdf(data: bytes, ocr: Ocr | None = None, limits: Limits | None = None) -> LoadedDocument:
    """Each page is a section; a page without a text layer is read by OCR when ``ocr`` is given."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    # pypdf and pdfminer log every recoverable oddity of real-world PDFs; the skip reason is what the user needs.
    for name in ("pypdf", "pdfminer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("pdf-encrypted", "password-protected")
        pages = len(reader.pages)
        if limits is not None and pages > limits.pages:
            raise SkipFile("too-many-pages", f"{pages:,} pages > {limits.pages:,} ({setting('pages')} raises it)")
        texts = [(page.extract_text() or "").replace("\r\n", "\n").replace("\x00", "") for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or None
    except SkipFile:
        raise
    except FileNotDecryptedError:
        raise SkipFile("pdf-encrypted", "password-protected") from None
    except Exception as e:  # pypdf raises many kinds on damaged files
        raise SkipFile("pdf-broken", f"{type(e).__name__}: {e}"[:200]) from None

    with_text = [i for i, t in enumerate(texts) if t.strip()]
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    scanned = _ocr_pages(data, blank, ocr, required=not with_text) if blank else {}
    tables = _tables(data, with_text) if with_text else {}
    builder = TextBuilder()
    for i, page_text in enumerate(texts):
        found = tables.get(i)
        if found:  # the text around the tables, then each table as rows: no cell is indexed twice
            page_text = found.text
        builder.block(page_text if page_text.strip() else scanned.get(i, ""), page=i + 1)
        for number, rows in enumerate(found.tables if found else [], start=1):
            for block in row_blocks(rows):
                builder.block(block.text, heading=f"table {number}, {rows_label(block)}", page=i + 1)
    if not builder.length:
        detail = "no text layer (scanned?) and OCR is off"
        if ocr is not None:
            detail = "no text layer, and OCR found no text" if scanned else "no text layer, and its pages render blank"
        raise SkipFile("pdf-no-text", detail)
    return builder.document("pdf", str(title) if title else None)


@dataclass
class _PageTables:
    text: str  # the page's text outside its tables
    tables: list[list[tuple[int, list[str]]]]  # each table's numbered rows


def _tables(data: bytes, pages: list[int]) -> dict[int, _PageTables]:
    """Ruled tables (two rows and two columns at least) of these pages; none when pdfplumber cannot read the
    file (its text layer is indexed all the same)."""
    import pdfplumber

    found: dict[int, _PageTables] = {}
    try:
        with pdfplumber.open(io.BytesIO(data), password="") as pdf:
            for i in pages:
                page = pdf.pages[i]
                kept = [(t.bbox, rows) for t in page.find_tables() if _is_table(rows := clean_rows(_numbered(t)))]
                if kept:
                    boxes = [box for box, _ in kept]
                    outside = page.filter(lambda obj, boxes=boxes: not any(_inside(obj, b) for b in boxes))
                    found[i] = _PageTables(outside.extract_text() or "", [rows for _, rows in kept])
                page.close()  # drops the page's parsed layout: a long PDF must not hold every page at once
    except Exception:
        return {}
    return found


def _numbered(table) -> list[tuple[int, list[str | None]]]:  # table: pdfplumber.table.Table
    return list(enumerate(table.extract(), start=1))


def _is_table(rows: list[tuple[int, list[str]]]) -> bool:
    return len(rows) >= 2 and len(rows[0][1]) >= 2


def _inside(obj: dict, box: tuple[float, float, float, float]) -> bool:
    """Whether a pdfplumber object's centre lies in ``box`` (x0, top, x1, bottom)."""
    if "x0" not in obj or "top" not in obj:
        return False
    x = (obj["x0"] + obj["x1"]) / 2
    y = (obj["top"] + obj["bottom"]) / 2
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _ocr_pages(data: bytes, pages: list[int], ocr: Ocr | None, *, required: bool) -> dict[int, str]:
    """OCR text of these pages (page images that are blank are not read). With ``required`` (no page has a text
    layer), a missing OCR engine skips the file with the fix; otherwise those pages are left out."""
    if ocr is None:
        return {}
    try:
        ocr.check()
    except SkipFile:
        if required:
            raise
        return {}
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data, password="")
    except pdfium.PdfiumError as e:
        if required:
            raise SkipFile("pdf-broken", f"cannot render for OCR: {e}"[:200]) from None
        return {}
    out: dict[int, str] = {}
    try:
        for done, i in enumerate(pages):
            if ocr.on_page:
                ocr.on_page(done, len(pages))
            image = _render(pdf[i])
            if not _blank(image):
                out[i] = ocr.text(image)
        if ocr.on_page:
            ocr.on_page(len(pages), len(pages))
    finally:
        pdf.close()
    return out


def _render(page) -> Image:  # page: pypdfium2.PdfPage
    width, height = page.get_size()  # in points, 72 to the inch
    scale = min(DPI / 72, MAX_RENDER_SIDE / max(width, height, 1))
    return page.render(scale=scale, grayscale=True).to_pil()


def _blank(image: Image) -> bool:
    low, _ = image.convert("L").getextrema()
    return low > 245
