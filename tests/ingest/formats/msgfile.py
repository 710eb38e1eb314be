"""Write small Outlook .msg files for tests, offline: a minimal Compound File Binary (OLE2, v3)
writer and the few MAPI properties a message needs ([MS-CFB], [MS-OXMSG]). No library here writes
either format; real Outlook files carry many more properties, which readers treat as optional."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Tree = dict[str, "bytes | Tree"]  # a storage: streams (bytes) and sub-storages by name

_SECTOR, _MINI, _CUTOFF = 512, 64, 4096
_FREE, _END, _FATSECT, _NONE = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_UNICODE, _BINARY, _LONG, _TIME = 0x001F, 0x0102, 0x0003, 0x0040


@dataclass(frozen=True)
class MsgAttachment:
    name: str
    data: bytes | None  # None: an embedded Outlook item, whose data is no file
    mime: str = "application/octet-stream"
    content_id: str | None = None  # set for a picture shown inside the body


def write_msg(
    path: Path,
    *,
    subject: str,
    body: str,
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    sent: dt.datetime,
    attachments: Sequence[MsgAttachment] = (),
) -> Path:
    root: Tree = {}
    props = [
        (0x001A, _UNICODE, "IPM.Note"),
        (0x0037, _UNICODE, subject),
        (0x1000, _UNICODE, body),
        (0x0C1A, _UNICODE, sender[0]),
        (0x0C1F, _UNICODE, sender[1]),
        (0x0E04, _UNICODE, "; ".join(name for name, _ in to)),
        (0x0039, _TIME, sent),
    ]
    for n, (name, address) in enumerate(to):
        recip: Tree = {}
        _properties(
            recip,
            [(0x3001, _UNICODE, name), (0x39FE, _UNICODE, address), (0x0C15, _LONG, 1)],
            header=8,
        )
        root[f"__recip_version1.0_#{n:08X}"] = recip
    for n, att in enumerate(attachments):
        storage: Tree = {}
        att_props: list[tuple[int, int, object]] = [(0x370E, _UNICODE, att.mime)]
        if att.data is None:
            att_props.append((0x3705, _LONG, 5))  # an embedded message
        else:
            att_props += [(0x3705, _LONG, 1), (0x3701, _BINARY, att.data)]  # by value
        if att.name:
            att_props.append((0x3707, _UNICODE, att.name))
        if att.content_id:
            att_props.append((0x3712, _UNICODE, att.content_id))
        _properties(storage, att_props, header=8)
        root[f"__attach_version1.0_#{n:08X}"] = storage
    counts = struct.pack("<8x4I8x", len(to), len(attachments), len(to), len(attachments))
    _properties(root, props, header=32, header_bytes=counts)
    path.write_bytes(compound_file(root))
    return path


def _properties(
    storage: Tree, props: list[tuple[int, int, object]], *, header: int, header_bytes: bytes = b""
) -> None:
    out = bytearray(header_bytes or bytes(header))
    for pid, ptype, value in props:
        tag = (pid << 16) | ptype
        if ptype in (_UNICODE, _BINARY):
            assert isinstance(value, str | bytes)
            data = value.encode("utf-16-le") if isinstance(value, str) else value
            storage[f"__substg1.0_{pid:04X}{ptype:04X}"] = data
            size = len(data) + (2 if ptype == _UNICODE else 0)  # the size counts a terminator
            out += struct.pack("<IIII", tag, 6, size, 0)
        elif ptype == _LONG:
            out += struct.pack("<IIiI", tag, 6, value, 0)
        else:
            assert isinstance(value, dt.datetime)
            ticks = int((value - dt.datetime(1601, 1, 1, tzinfo=dt.UTC)).total_seconds() * 10**7)
            out += struct.pack("<IIQ", tag, 6, ticks)
    storage["__properties_version1.0"] = bytes(out)


def compound_file(root: Tree) -> bytes:
    """The bytes of a CFB v3 file holding `root`'s streams and storages."""
    entries: list[list[object]] = []  # [name, type, data, child ids]

    def add(name: str, node: bytes | Tree, kind: int) -> int:
        entries.append([name, kind, node if isinstance(node, bytes) else b"", []])
        index = len(entries) - 1
        if isinstance(node, dict):
            kids = sorted(node, key=lambda n: (len(n), n.upper()))  # the order CFB compares names
            entries[index][3] = [
                add(k, node[k], 1 if isinstance(node[k], dict) else 2) for k in kids
            ]
        return index

    add("Root Entry", root, 5)

    mini = bytearray()
    minifat: list[int] = []
    big: list[tuple[int, bytes]] = []  # (entry id, data) of streams stored in full sectors
    starts: dict[int, int] = {}
    for i, (_, kind, data, _) in enumerate(entries):
        assert isinstance(data, bytes)
        if kind != 2 or not data:
            continue
        if len(data) < _CUTOFF:
            first, count = len(mini) // _MINI, -(-len(data) // _MINI)
            starts[i] = first
            minifat += [*range(first + 1, first + count), _END]
            mini += data.ljust(count * _MINI, b"\0")
        else:
            big.append((i, data))

    def sectors(n_bytes: int) -> int:
        return -(-n_bytes // _SECTOR)

    n_dir = sectors(len(entries) * 128)
    n_minifat = sectors(len(minifat) * 4)
    n_mini = sectors(len(mini))
    n_big = sum(sectors(len(d)) for _, d in big)
    n_fat = 1
    while n_fat * 128 < n_fat + n_dir + n_minifat + n_mini + n_big:
        n_fat += 1
    assert n_fat <= 109, "test files only: no DIFAT sectors"

    fat: list[int] = [_FATSECT] * n_fat
    chain_starts: list[int] = []
    for count in (n_dir, n_minifat, n_mini, *(sectors(len(d)) for _, d in big)):
        chain_starts.append(len(fat) if count else _END)
        fat += [*range(len(fat) + 1, len(fat) + count), _END] if count else []
    dir_start, minifat_start, mini_start, *big_starts = chain_starts
    for (i, _), start in zip(big, big_starts, strict=True):
        starts[i] = start
    fat += [_FREE] * (n_fat * 128 - len(fat))

    directory = bytearray()
    for i, (name, kind, data, kids) in enumerate(entries):
        assert isinstance(name, str) and isinstance(data, bytes) and isinstance(kids, list)
        # siblings as a chain of right links: a valid (if unbalanced) binary search tree
        right = _NONE
        for parent in entries:
            siblings = parent[3]
            assert isinstance(siblings, list)
            if i in siblings and siblings.index(i) + 1 < len(siblings):
                right = siblings[siblings.index(i) + 1]
        child = kids[0] if kids else _NONE
        if kind == 5:
            start, size = (mini_start, len(mini)) if mini else (_END, 0)
        else:
            start, size = starts.get(i, _END), len(data)
        encoded = name.encode("utf-16-le") + b"\0\0"
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ", encoded, len(encoded), kind, 1, _NONE, right, child,
            bytes(16), 0, 0, 0, start, size,
        )  # fmt: skip
    empty = struct.pack(
        "<64sHBBIII16sIQQIQ", b"", 0, 0, 0, _NONE, _NONE, _NONE, bytes(16), 0, 0, 0, 0, 0
    )
    while len(directory) % _SECTOR:
        directory += empty

    difat = list(range(n_fat)) + [_FREE] * (109 - n_fat)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I", _MAGIC, bytes(16), 0x3E, 3, 0xFFFE, 9, 6, bytes(6),
        0, n_fat, dir_start, 0, _CUTOFF, minifat_start if minifat else _END, n_minifat,
        _END, 0, *difat,
    )  # fmt: skip
    body = struct.pack(f"<{len(fat)}I", *fat) + bytes(directory)
    body += struct.pack(f"<{len(minifat)}I", *minifat).ljust(n_minifat * _SECTOR, b"\xff")
    body += bytes(mini).ljust(n_mini * _SECTOR, b"\0")
    for _, data in big:
        body += data.ljust(sectors(len(data)) * _SECTOR, b"\0")
    return header + body
