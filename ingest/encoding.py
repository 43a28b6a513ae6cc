"""Bytes to text: BOMs first, then strict UTF-8, then charset detection; binary data is refused."""

from __future__ import annotations

import codecs

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SNIFF = 8192


class NotText(ValueError):
    """The bytes are binary or in no encoding we can identify; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode(data: bytes) -> tuple[str, str]:
    """Return ``(text, encoding)`` with newlines normalised to ``\\n``; raise :class:`NotText`."""
    text, encoding = _decode(data)
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def _decode(data: bytes) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as e:
                raise NotText("undecodable", f"{encoding} BOM but invalid data at byte {e.start}") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes  # ~50 ms import, only for non-UTF-8 files

    has_nul = b"\x00" in data[:_SNIFF]
    best = _best(from_bytes(data))
    if best is None:
        raise NotText("binary" if has_nul else "undecodable", "no text encoding fits")
    encoding = best.encoding
    # NUL bytes are only plausible in UTF-16/32 text; anything else with them is a binary file.
    if has_nul and not encoding.startswith(("utf_16", "utf_32")):
        raise NotText("binary", "contains NUL bytes")
    return str(best), encoding


# On a tie, the encoding most Western text is in: charset-normalizer ranks cp1250 (Central European) first
# for text whose bytes both decode to plausible letters, and "naïve" would come out as "naďve".
_PREFERRED_ON_TIE = ("cp1252", "latin_1", "iso8859_15")


def _best(matches):  # CharsetMatches -> CharsetMatch | None
    best = matches.best()
    if best is None:
        return None
    for m in matches:
        if m.encoding in _PREFERRED_ON_TIE and m.chaos <= best.chaos and m.coherence >= best.coherence:
            return m
    return best


def looks_binary(head: bytes) -> bool:
    """Cheap pre-check on the first bytes of a file: NULs without a UTF-16/32 BOM."""
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    return b"\x00" in head[:_SNIFF] and not _plausible_utf16(head[:_SNIFF])


def _plausible_utf16(head: bytes) -> bool:
    # BOM-less UTF-16 text of mostly ASCII has NUL in every other byte.
    if len(head) < 64:
        return False
    even_nuls = head[0::2].count(0) / len(head[0::2])
    odd_nuls = head[1::2].count(0) / len(head[1::2])
    return max(even_nuls, odd_nuls) > 0.6 and min(even_nuls, odd_nuls) < 0.05
