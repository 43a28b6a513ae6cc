"""OCR speed and accuracy: pages of real text drawn at 300 dpi into a PDF with no text layer, read by the PDF
loader (render + Tesseract + cache), against bare `tesseract` on the same page images in the same run (as
installed, and with one OpenMP thread).

The text is XQuAD's articles (documents, not questions); word recall is the share of each page's words that the
OCR text holds, after lower-casing and dropping punctuation.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import XQUAD, median

LINES_PER_PAGE = 40
CHARS_PER_LINE = 80


def _pages(n: int) -> list[str]:
    """``n`` full pages of article text."""
    words = " ".join(p.read_text() for p in sorted((XQUAD / "docs").glob("*.txt"))).split()
    lines = textwrap.wrap(" ".join(words), CHARS_PER_LINE)[: n * LINES_PER_PAGE]
    return ["\n".join(lines[i * LINES_PER_PAGE : (i + 1) * LINES_PER_PAGE]) for i in range(n)]


def _draw(text: str):  # -> PIL.Image.Image, an A4 page at 300 dpi
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 40)
    image = Image.new("L", (2480, 3508), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(text.splitlines()):
        draw.text((160, 200 + 75 * i), line, fill=0, font=font)
    return image


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _recall(truth: str, found: str) -> float:
    have = set(_words(found))
    words = _words(truth)
    return sum(w in have for w in words) / max(len(words), 1)


def run(pages: int) -> list[dict[str, Any]]:
    from ingest.loaders.pdf import load_pdf
    from ingest.ocr import Ocr

    texts = _pages(pages)
    images = [_draw(t) for t in texts]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pngs = []
        for i, image in enumerate(images):
            pngs.append(folder / f"page-{i}.png")
            image.save(pngs[-1])
        base = 0.0
        for label, env in (
            ("tesseract CLI, as installed", {}),
            ("tesseract CLI, OMP_THREAD_LIMIT=1", {"OMP_THREAD_LIMIT": "1"}),
        ):
            per_page = []
            for png in pngs:
                started = time.perf_counter()
                subprocess.run(
                    ["tesseract", str(png), "stdout"], capture_output=True, check=True, env={**os.environ, **env}
                )
                per_page.append(time.perf_counter() - started)
            seconds = median(per_page)
            base = base or seconds
            rows.append({
                "row": label, "pages": pages, "s_per_page": seconds, "pages_per_s": 1 / seconds,
                "x_vs_tesseract_cli": base / seconds,
            })  # fmt: skip

        pdf = folder / "scan.pdf"
        images[0].save(pdf, save_all=True, append_images=images[1:], resolution=300)
        data = pdf.read_bytes()
        for label, cache in (
            ("rag PDF loader, cold cache", folder / "cache"),
            ("rag PDF loader, cached", folder / "cache"),
        ):
            ocr = Ocr(cache=cache)
            started = time.perf_counter()
            doc = load_pdf(data, ocr)
            seconds = time.perf_counter() - started
            page_texts = [doc.text[s.start : s.end] for s in doc.sections]
            recall = median([_recall(t, f) for t, f in zip(texts, page_texts, strict=False)])
            rows.append({
                "row": label, "pages": pages, "s_per_page": seconds / pages, "pages_per_s": pages / seconds,
                "x_vs_tesseract_cli": base / (seconds / pages), "word_recall_median": recall,
                "recognised": ocr.pages, "from_cache": ocr.cached,
            })  # fmt: skip
    return rows
