"""Email: headers first, the body as text, attached files extracted (safely named, capped)."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from pathlib import Path

import pytest

from ingest.formats import mail
from ingest.parse import Attachment, Element, ParseError, parse_file

from .msgfile import MsgAttachment, write_msg

CSV = b"item,cost\nrent,100\n"


def make_msg(path: Path) -> Path:
    return write_msg(
        path,
        subject="Budget – Q3 ✓",
        body="Hi team,\n\nThe budget is attached.\n\nRegards,\nDana",
        sender=("Dana Scully", "dana@example.com"),
        to=[("Fox Mulder", "fox@example.com"), ("Walter", "w@example.com")],
        sent=dt.datetime(2026, 3, 3, 9, 30, tzinfo=dt.UTC),
        attachments=[
            MsgAttachment("budget.csv", CSV, "text/csv"),
            MsgAttachment("logo.png", b"\x89PNG" + bytes(5000), "image/png", content_id="logo@x"),
            MsgAttachment("../scan.bin", bytes(9000)),
            MsgAttachment("", None, "application/vnd.ms-outlook"),
        ],
    )


def make_eml(path: Path) -> Path:
    msg = EmailMessage()
    msg["From"] = "Alice Ärger <alice@example.com>"
    msg["To"] = "bob@example.com, Carol <carol@example.com>"
    msg["Date"] = "Tue, 03 Mar 2026 10:00:00 +0100"
    msg["Subject"] = "Quarterly report – draft"
    msg.set_content("Hi Bob,\n\nThe quarterly report is attached.\n\nThanks,\nAlice\n")
    msg.add_alternative(
        "<p>Hi Bob,</p><p>The <b>quarterly</b> report is attached.</p>"
        "<ul><li>revenue</li><li>costs</li></ul><p>Thanks,<br>Alice</p>",
        subtype="html",
    )
    msg.add_attachment(CSV, maintype="text", subtype="csv", filename="../../etc/budget.csv")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(b"%PDF-1.4 other", maintype="application", subtype="pdf", filename="A.pdf")
    msg.add_attachment(
        b"\x89PNG logo", maintype="image", subtype="png", disposition="inline", filename="logo.png"
    )
    msg.add_attachment(b"\x89PNG nameless", maintype="image", subtype="png")
    msg.add_attachment(b"sig", maintype="application", subtype="pkcs7-signature", filename="s.p7s")
    forwarded = EmailMessage()
    forwarded["From"] = "dan@example.com"
    forwarded["Subject"] = "Old thread"
    forwarded.set_content("The earlier discussion.")
    msg.add_attachment(forwarded)
    path.write_bytes(bytes(msg))
    return path


def test_eml_headers_body_and_attachments(tmp_path: Path) -> None:
    parsed = parse_file(make_eml(tmp_path / "report.eml"))
    assert parsed.title == "Quarterly report – draft"
    assert parsed.mime == "message/rfc822"
    assert parsed.elements[0] == Element(
        "From: Alice Ärger <alice@example.com>\n"
        "To: bob@example.com, Carol <carol@example.com>\n"
        "Date: Tue, 03 Mar 2026 10:00:00 +0100\n"
        "Subject: Quarterly report – draft\n"
        "Attachments: budget.csv, a.pdf, A (2).pdf, Old thread.eml",
        "text",
    )
    assert [(e.text, e.kind) for e in parsed.elements[1:]] == [
        ("Hi Bob,", "text"),  # HTML body preferred; never a heading
        ("The quarterly report is attached.", "text"),
        ("revenue", "list"),
        ("costs", "list"),
        ("Thanks, Alice", "text"),
    ]
    names = [a.name for a in parsed.attachments]
    assert names == ["budget.csv", "a.pdf", "A (2).pdf", "Old thread.eml"]
    assert parsed.attachments[0] == Attachment("budget.csv", CSV)
    inner = parse_file(_save(tmp_path, parsed.attachments[3]))
    assert inner.title == "Old thread"
    assert inner.elements[-1].text == "The earlier discussion."


def test_plain_text_email_without_attachments(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "x@example.com"
    msg["Subject"] = ""
    msg.set_content("Just one line.")
    (tmp_path / "note.eml").write_bytes(bytes(msg))
    parsed = parse_file(tmp_path / "note.eml")
    assert parsed.title == "note"
    assert parsed.attachments == []
    assert [e.text for e in parsed.elements] == ["From: x@example.com", "Just one line."]


def test_attachments_over_the_caps_are_named_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail, "MAX_ATTACHMENTS", 3)
    monkeypatch.setattr(mail, "MAX_ATTACHMENT_BYTES", 2**20)
    msg = EmailMessage()
    msg["From"] = "x@example.com"
    msg["Subject"] = "Many files"
    msg.set_content("See attached.")
    msg.add_attachment(bytes(2**20 + 1), maintype="application", subtype="zip", filename="huge.zip")
    for n in range(5):
        msg.add_attachment(b"x", maintype="text", subtype="plain", filename=f"f{n}.txt")
    (tmp_path / "many.eml").write_bytes(bytes(msg))
    parsed = parse_file(tmp_path / "many.eml")
    assert [a.name for a in parsed.attachments] == ["f0.txt", "f1.txt", "f2.txt"]
    note = parsed.elements[-1].text
    assert note.startswith("Attachments not indexed: huge.zip (over the limit of 3 files or 1 MB")
    assert "f3.txt" in note and "f4.txt" in note


def test_encrypted_email_is_refused(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "x@example.com"
    msg["Subject"] = "secret"
    msg.set_content(b"\x30\x80", maintype="application", subtype="pkcs7-mime")
    msg.set_param("smime-type", "enveloped-data")
    (tmp_path / "secret.eml").write_bytes(bytes(msg))
    with pytest.raises(ParseError, match="encrypted email"):
        parse_file(tmp_path / "secret.eml")


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\plan.docx", "plan.docx"),
        (".bashrc", "bashrc"),
        ('what?<is>"this"|*.txt', "what__is__this___.txt"),
        ("tab\there\x00.md", "tab_here_.md"),
        ("..", "attachment"),
        ("", "attachment"),
        ("é" * 300 + ".pdf", "é" * 98 + ".pdf"),
    ],
)
def test_safe_name(raw: str, safe: str) -> None:
    assert mail.safe_name(raw) == safe
    assert len(mail.safe_name(raw).encode()) <= 200


def test_msg_headers_body_and_attachments(tmp_path: Path) -> None:
    path = make_msg(tmp_path / "budget.msg")
    parsed = parse_file(path)
    assert parsed.title == "Budget – Q3 ✓"
    assert parsed.mime == "application/vnd.ms-outlook"
    assert parsed.elements[0].text == (
        'From: "Dana Scully" <dana@example.com>\n'
        "To: Fox Mulder <fox@example.com>, Walter <w@example.com>\n"
        "Date: Tue, 03 Mar 2026 09:30:00 +0000\n"
        "Subject: Budget – Q3 ✓\n"
        "Attachments: budget.csv, scan.bin"
    )
    assert "The budget is attached." in [e.text for e in parsed.elements]
    assert (
        parsed.elements[-1].text == "Attachments not indexed: embedded item (cannot be extracted)"
    )
    assert all(e.kind == "text" for e in parsed.elements)
    assert parsed.attachments == [
        Attachment("budget.csv", CSV),
        Attachment("scan.bin", bytes(9000)),
    ]


def test_msg_that_is_not_ole_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fake.msg").write_text("From: someone\n\nnot outlook")
    with pytest.raises(ParseError, match=r"not a valid MSG"):
        parse_file(tmp_path / "fake.msg")


def _save(folder: Path, attachment: Attachment) -> Path:
    path = folder / attachment.name
    path.write_bytes(attachment.data)
    return path
