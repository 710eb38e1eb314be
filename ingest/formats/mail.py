"""Email (.eml, Outlook .msg): the headers as a first element, the body as text, and the attached
files handed back so each can be indexed as a document of its own."""

from __future__ import annotations

import email
import email.policy
import email.utils
import io
import os
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .base import Attachment, Element, Parsed, ParseError, short_reason
from .containers import OLE_MAGIC, starts_with
from .convert import convert
from .lean import NO_LANGUAGE, skip_narrative_checks

MAX_ATTACHMENTS = 50
MAX_ATTACHMENT_BYTES = 50 * 2**20
_NAME_BYTES = 200
_SIGNATURES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
_UNSAFE = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
# MAPI property ids ([MS-OXPROPS]) that oxmsg has no accessor for
_PID_DISPLAY_TO, _PID_DISPLAY_CC, _PID_RECIPIENT_TYPE = 0x0E04, 0x0E03, 0x0C15
_PID_ATTACH_FILENAME, _PID_ATTACH_CONTENT_ID, _PID_ATTACHMENT_HIDDEN = 0x3704, 0x3712, 0x7FFE
_PID_DISPLAY_NAME = 0x3001

Found = tuple[str, bytes | None]  # (raw name, data or None when it cannot be extracted)


def parse_eml(path: Path, mime: str) -> Parsed:
    data = path.read_bytes()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not any(
        msg[h] for h in ("From", "To", "Subject", "Date", "Message-ID")
    ):
        raise ParseError("not a valid email (no From, To, Subject, Date or Message-ID header)")
    if msg.get_content_type() == "multipart/encrypted" or _smime_enveloped(msg):
        raise ParseError("encrypted email: cannot be read without the recipient's key")
    from unstructured.partition.email import partition_email

    skip_narrative_checks()
    raw = partition_email(file=io.BytesIO(data), process_attachments=False, languages=NO_LANGUAGE)
    headers = [(h, _header(msg, h)) for h in ("From", "To", "Cc", "Date", "Subject")]
    return _assemble(path, mime, headers, convert(raw, headings=False), _eml_files(msg))


def _header(msg: EmailMessage, name: str) -> str:
    try:
        return " ".join(str(msg[name] or "").split())
    except Exception:  # a malformed header is left out, not fatal
        return ""


def _smime_enveloped(msg: EmailMessage) -> bool:
    ctype = msg.get_content_type()
    return ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime") and (
        msg.get_param("smime-type") != "signed-data"
    )


def _eml_files(msg: EmailMessage) -> Iterator[Found]:
    for part in msg.iter_attachments():
        ctype = part.get_content_type()
        if ctype in _SIGNATURES:
            continue
        name = part.get_filename()
        if ctype == "message/rfc822":  # a forwarded message: becomes an .eml of its own
            payload: Any = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if inner is None:
                continue
            subject = " ".join(str(inner["Subject"] or "").split())
            try:
                yield name or f"{subject or 'message'}.eml", inner.as_bytes()
            except Exception:
                yield name or f"{subject or 'message'}.eml", None
            continue
        inline = part.get_content_disposition() == "inline" or (
            part["Content-ID"] and part.get_content_disposition() != "attachment"
        )
        if not name or (inline and part.get_content_maintype() == "image"):
            continue  # pictures in the body, logos in signatures
        data = part.get_payload(decode=True)
        yield name, data if isinstance(data, bytes) else None


def parse_msg(path: Path, mime: str) -> Parsed:
    if not starts_with(path, OLE_MAGIC):
        raise ParseError("not a valid MSG (not an Outlook message file)")
    from oxmsg import Message

    try:
        msg = Message.load(str(path))
        subject = msg.subject
    except Exception as exc:
        raise ParseError(f"not a valid MSG ({short_reason(exc, path)})") from exc
    headers_in = msg.message_headers
    if msg.message_class.lower() == "ipm.note.smime" or "encrypted" in headers_in.get(
        "Content-Type", ""
    ):
        raise ParseError("encrypted email: cannot be read without the recipient's key")
    headers = [
        ("From", msg.sender or ""),
        ("To", headers_in.get("To") or _recipients(msg, 1) or _prop(msg, _PID_DISPLAY_TO)),
        ("Cc", headers_in.get("Cc") or _recipients(msg, 2) or _prop(msg, _PID_DISPLAY_CC)),
        ("Date", headers_in.get("Date") or _date(msg)),
        ("Subject", subject),
    ]
    headers = [(h, " ".join(v.split())) for h, v in headers]
    return _assemble(path, mime, headers, _msg_body(msg), _msg_files(msg))


def _prop(msg: Any, pid: int) -> str:
    return str(msg.properties.str_prop_value(pid) or "")


def _recipients(msg: Any, kind: int) -> str:
    """Recipients of one kind (1 To, 2 Cc) as "Name <address>"."""
    return ", ".join(
        f"{r.name} <{r.email_address}>" if r.name and r.email_address else r.name or r.email_address
        for r in msg.recipients
        if r.properties.int_prop_value(_PID_RECIPIENT_TYPE) == kind
    )


def _date(msg: Any) -> str:
    sent = msg.sent_date
    return email.utils.format_datetime(sent) if sent else ""


def _msg_body(msg: Any) -> list[Element]:
    """HTML body if there is one (as `partition_msg` does), else the plain one."""
    from unstructured.partition.html import partition_html
    from unstructured.partition.text import partition_text

    skip_narrative_checks()
    try:
        html = msg.html_body
    except (LookupError, UnicodeDecodeError):  # unknown or wrong code page: use the plain body
        html = None
    if html and html.strip():
        return convert(partition_html(text=html, languages=NO_LANGUAGE), headings=False)
    body = msg.body
    if not body or not body.strip():
        return []
    return convert(partition_text(text=body, languages=NO_LANGUAGE), headings=False)


def _msg_files(msg: Any) -> Iterator[Found]:
    for att in msg.attachments:
        props = att.properties
        hidden = next((p.value for p in props if p.pid == _PID_ATTACHMENT_HIDDEN), False)
        mime = att.mime_type or ""
        if hidden or (mime.startswith("image/") and props.str_prop_value(_PID_ATTACH_CONTENT_ID)):
            continue  # pictures in the body, logos in signatures
        data = att.file_bytes  # None for an embedded Outlook item or a link
        name = (
            att.file_name
            or props.str_prop_value(_PID_ATTACH_FILENAME)
            or props.str_prop_value(_PID_DISPLAY_NAME)
            or ("embedded item" if data is None else "")
        )
        if name:
            yield name, data


def _assemble(
    path: Path,
    mime: str,
    headers: list[tuple[str, str]],
    body: list[Element],
    found: Iterator[Found],
) -> Parsed:
    kept: list[Attachment] = []
    missed: list[str] = []
    names: set[str] = set()
    total = 0
    for raw_name, data in found:
        name = unique_name(safe_name(raw_name), names)
        if data is None:
            missed.append(f"{name} (cannot be extracted)")
        elif len(kept) >= MAX_ATTACHMENTS or total + len(data) > MAX_ATTACHMENT_BYTES:
            missed.append(
                f"{name} (over the limit of {MAX_ATTACHMENTS} files or "
                f"{MAX_ATTACHMENT_BYTES // 2**20} MB per email)"
            )
        else:
            kept.append(Attachment(name, data))
            total += len(data)
    lines = [f"{h}: {v}" for h, v in headers if v]
    if kept:
        lines.append("Attachments: " + ", ".join(a.name for a in kept))
    elements = [Element("\n".join(lines), "text")] if lines else []
    elements += body
    if missed:
        more = f" and {len(missed) - 20} more" if len(missed) > 20 else ""
        shown = ", ".join(missed[:20]) + more
        elements.append(Element(f"Attachments not indexed: {shown}", "text"))
    subject = dict(headers).get("Subject", "")
    return Parsed(title=subject or path.stem, mime=mime, elements=elements, attachments=kept)


def safe_name(raw: str) -> str:
    """A bare, harmless file name: no directories, no control or reserved characters, no leading
    dot, at most 200 bytes (the extension kept)."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    stem, ext = os.path.splitext(name)
    if len(ext.encode()) > 20:
        stem, ext = name, ""
    while len((stem + ext).encode()) > _NAME_BYTES:
        stem = stem[:-1]
    return (stem + ext) or "attachment"


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name (2)`, `name (3)`... so two attachments never share a file name."""
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem} ({n}){ext}"
    taken.add(candidate.lower())
    return candidate
