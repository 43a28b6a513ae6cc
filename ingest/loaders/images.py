"""Pictures of text (PNG, JPEG, TIFF, ...): each frame read by OCR; a multi-page TIFF's frames are its pages."""

from __future__ import annotations

import io

from ingest.limits import Limits, setting
from ingest.loaders.document import LoadedDocument, TextBuilder
from ingest.ocr import Ocr
from ingest.records import SkipFile


def load_image(data: bytes, ocr: Ocr | None = None, limits: Limits | None = None) -> LoadedDocument:
    """Each frame is read by OCR in turn, decoded only when its turn comes: a TIFF of a thousand full-page frames
    never sits in memory whole. More frames than ``limits.frames`` are refused before any is decoded."""
    if ocr is None:
        raise SkipFile("ocr-unavailable", "a picture is read only by OCR, which is off (RAG_OCR_LANGUAGES=none)")
    ocr.check()
    from PIL import Image, ImageSequence, UnidentifiedImageError

    limit = (limits or Limits()).frames
    builder = TextBuilder()
    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1)  # TIFF counts its frames by walking the directory, decoding none
        if frames > limit:
            raise SkipFile("too-many-pages", f"{frames:,} frames > {limit:,} ({setting('frames')} raises it)")
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if ocr.on_page:
                ocr.on_page(number - 1, frames)
            builder.block(ocr.text(frame.convert("L")), page=number if frames > 1 else None)
    except Image.DecompressionBombError as e:
        raise SkipFile("image-too-large", str(e)[:200]) from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as e:
        raise SkipFile("image-broken", f"{type(e).__name__}: {e}"[:200]) from None
    if not builder.length:
        raise SkipFile("empty", "OCR found no text in the image")
    return builder.document("image")
