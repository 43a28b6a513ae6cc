"""E-mail: one message (.eml) or a mailbox of them (.mbox), through the standard library's email package.

Subject, sender and date head each message's text (so they can be searched and quoted); the message is cited by
its subject. Attachments are handed back to the caller, which indexes the supported ones as sources of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from ingest.limits import Limits, setting
from ingest.loaders.document import Attachment, LoadedDocument, TextBuilder
from ingest.loaders.html import load_html
from ingest.records import SkipFile, SkippedFile

# mbox separates messages with a line that starts "From " (mboxo/mboxrd; body lines that start so are quoted).
_MBOX_FROM = re.compile(rb"^From .*\r?\n", re.MULTILINE)
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


@dataclass
class _Found:
    """What the messages of one file carry besides their text."""

    limits: Limits
    attachments: list[Attachment] = field(default_factory=list)
    dropped: list[SkippedFile] = field(default_factory=list)


def load_eml(data: bytes, limits: Limits | None = None) -> LoadedDocument:
    builder = TextBuilder()
    found = _Found(limits or Limits())
    subject = _add_message(builder, _parse(data), found)
    if not builder.length:
        raise SkipFile("empty", "a message with no text")
    return builder.document("email", subject, found.attachments, found.dropped)


def load_mbox(data: bytes, limits: Limits | None = None) -> LoadedDocument:
    starts = [m for m in _MBOX_FROM.finditer(data)]
    if not starts:
        raise SkipFile("mbox-broken", "no 'From ' line: not an mbox mailbox")
    builder = TextBuilder()
    found = _Found(limits or Limits())
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(data)
        _add_message(builder, _parse(_QUOTED_FROM.sub(rb"\1", data[m.end() : end])), found)
    return builder.document("email", None, found.attachments, found.dropped)


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # what policy.default always builds
    return message


def _add_message(builder: TextBuilder, message: EmailMessage, found: _Found, depth: int = 1, where: str = "") -> str:
    """Append one message (headers, then body) and the messages forwarded in it, down to the depth limit;
    collect its attachments; return its subject."""
    subject = " ".join(str(message.get("subject", "")).split()) or "(no subject)"
    header = [f"Subject: {subject}"]
    for name in ("from", "to", "cc", "date"):
        if value := message.get(name):
            header.append(f"{name.capitalize()}: {' '.join(str(value).split())}")
    builder.block("\n".join(header), heading=subject)
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        try:
            content = body.get_content()
        except (LookupError, ValueError):  # an unknown charset: keep the headers, lose the body
            content = ""
        if body.get_content_subtype() == "html":
            content = load_html(content).text
        builder.block(content, heading=subject)
    taken = {a.name for a in found.attachments}
    for number, part in enumerate(message.iter_attachments(), start=1):
        if part.get_content_type() == "message/rfc822":  # a forwarded message: part of this one's text
            inner = part.get_payload()
            if not isinstance(inner, list) or not inner or not isinstance(inner[0], EmailMessage):
                continue
            place = f"{where}forwarded {number}"
            if depth >= found.limits.depth:
                found.dropped.append(SkippedFile(place, "too-deep", _too_deep(depth + 1, found.limits)))
                continue
            _add_message(builder, inner[0], found, depth + 1, f"{place}/")
            continue
        name = part.get_filename()
        if not name or part.get_content_maintype() == "multipart":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        name = _unique(name.replace("/", "_").replace("\\", "_").strip() or "attachment", taken)
        taken.add(name)
        found.attachments.append(Attachment(name, payload))
    return subject


def _too_deep(depth: int, limits: Limits) -> str:
    return f"a message nested {depth} deep > {limits.depth} ({setting('depth')} raises it)"


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (name, "")
    n = 2
    while f"{stem} ({n}){ext}" in taken:
        n += 1
    return f"{stem} ({n}){ext}"
