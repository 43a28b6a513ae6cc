"""E-mail: one message (.eml) or a mailbox of them (.mbox), through the standard library's email package.

Subject, sender and date head each message's text (so they can be searched and quoted); the message is cited by
its subject. Attachments are handed back to the caller, which indexes the supported ones as sources of their own.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from ingest.loaders.document import Attachment, LoadedDocument, TextBuilder
from ingest.loaders.html import load_html
from ingest.records import SkipFile

# mbox separates messages with a line that starts "From " (mboxo/mboxrd; body lines that start so are quoted).
_MBOX_FROM = re.compile(rb"^From .*\r?\n", re.MULTILINE)
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def load_eml(data: bytes) -> LoadedDocument:
    builder = TextBuilder()
    attachments: list[Attachment] = []
    subject = _add_message(builder, _parse(data), attachments)
    if not builder.length:
        raise SkipFile("empty", "a message with no text")
    return builder.document("email", subject, attachments)


def load_mbox(data: bytes) -> LoadedDocument:
    starts = [m for m in _MBOX_FROM.finditer(data)]
    if not starts:
        raise SkipFile("mbox-broken", "no 'From ' line: not an mbox mailbox")
    builder = TextBuilder()
    attachments: list[Attachment] = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(data)
        _add_message(builder, _parse(_QUOTED_FROM.sub(rb"\1", data[m.end() : end])), attachments)
    return builder.document("email", None, attachments)


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # what policy.default always builds
    return message


def _add_message(builder: TextBuilder, message: EmailMessage, attachments: list[Attachment]) -> str:
    """Append one message (headers, then body); collect its attachments; return its subject."""
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
    taken = {a.name for a in attachments}
    for part in message.iter_attachments():
        name = part.get_filename()
        if not name or part.get_content_maintype() == "multipart":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        name = _unique(name.replace("/", "_").replace("\\", "_").strip() or "attachment", taken)
        taken.add(name)
        attachments.append(Attachment(name, payload))
    return subject


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (name, "")
    n = 2
    while f"{stem} ({n}){ext}" in taken:
        n += 1
    return f"{stem} ({n}){ext}"
