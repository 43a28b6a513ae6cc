"""Zip-based formats (docx, pptx, xlsx, odt, ods, epub) are checked before any member is inflated.

Python's zipfile never inflates a member past the size its directory entry declares, so those declared sizes
bound what a format library can be made to read: the sum over the members, and each large member's ratio to its
compressed size, are checked against the limits first.
"""

from __future__ import annotations

import io
import zipfile

from ingest.limits import Limits, setting
from ingest.records import SkipFile

# Members at most this large are not held to the ratio: a tiny XML file of repeated tags compresses a lot.
RATIO_FREE_BYTES = 1 << 20
MAX_MEMBERS = 10_000


def check_zip(data: bytes, limits: Limits) -> None:
    """:class:`SkipFile` ``too-large`` when ``data`` (a zip archive) would inflate past the limits."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a readable zip: the format's own loader says what is wrong
    if len(members) > MAX_MEMBERS:
        raise SkipFile("too-large", f"{len(members):,} members in the archive > {MAX_MEMBERS:,}")
    total = sum(m.file_size for m in members)
    if total > limits.unzipped_mb << 20:
        raise SkipFile(
            "too-large",
            f"inflates to {total / 2**20:,.0f} MB > {limits.unzipped_mb} MB ({setting('unzipped_mb')} raises it)",
        )
    for m in members:
        if m.file_size > RATIO_FREE_BYTES and m.file_size > limits.zip_ratio * max(m.compress_size, 1):
            ratio = m.file_size / max(m.compress_size, 1)
            raise SkipFile(
                "too-large",
                f"member {m.filename[:80]!r} inflates {ratio:,.0f} times > {limits.zip_ratio} "
                f"(a zip bomb; {setting('zip_ratio')} raises it)",
            )
