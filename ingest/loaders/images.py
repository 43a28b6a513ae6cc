"""Pictures of text (PNG, JPEG, TIFF, ...): each frame read by OCR; a multi-page TIFF's frames are its pages."""

from __future__ import annotations

import io

from ingest.loaders.document import LoadedDocument, TextBuilder
from ingest.ocr import Ocr
from ingest.records import SkipFile


def load_image(data: bytes, ocr: Ocr | None = None) -> LoadedDocument:
    if ocr is None:
        raise SkipFile("ocr-unavailable", "a picture is read only by OCR, which is off (RAG_OCR_LANGUAGES=none)")
    ocr.check()
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        frames = [frame.convert("L") for frame in ImageSequence.Iterator(image)]
    except Image.DecompressionBombError as e:
        raise SkipFile("image-too-large", str(e)[:200]) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SkipFile("image-broken", f"{type(e).__name__}: {e}"[:200]) from None
    builder = TextBuilder()
    for number, frame in enumerate(frames, start=1):
        if ocr.on_page:
            ocr.on_page(number - 1, len(frames))
        builder.block(ocr.text(frame), page=number if len(frames) > 1 else None)
    if not builder.length:
        raise SkipFile("empty", "OCR found no text in the image")
    return builder.document("image")
