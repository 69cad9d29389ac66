"""Crafted archives for the bomb tests. Zips are written by hand (zip64 records, so a member
may declare any size, at any offset, with any method); deflate streams of many GiB of zeros
are built from one compressed MiB repeated, in milliseconds."""

import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30
LOCAL = struct.Struct("<4s5H3L2H")
CENTRAL = struct.Struct("<4s6H3L5H2L")
END64 = struct.Struct("<4sQ2H2L4Q")
LOCATOR = struct.Struct("<4sLQL")
END = struct.Struct("<4s4H2LH")
FULL = 0xFFFFFFFF


def deflated_zeros(mib: int, prefix: bytes = b"") -> bytes:
    """A raw deflate stream of `prefix` and then `mib` MiB of zeros (a full flush ends each
    piece on a byte, and a piece starts with a literal, so the copies join)."""
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = first.compress(prefix) + first.flush(zlib.Z_FULL_FLUSH) if prefix else b""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + piece * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes  # as stored: a raw deflate stream for ZIP_DEFLATED
    size: int  # the unpacked size the headers declare
    crc: int = 0
    method: int = zipfile.ZIP_DEFLATED


def honest(name: str, data: bytes) -> Member:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Member(name, c.compress(data) + c.flush(), len(data), zlib.crc32(data))


def local_header(m: Member, packed: int) -> bytes:
    name, extra = m.name.encode(), struct.pack("<HHQQ", 1, 16, m.size, packed)
    fixed = LOCAL.pack(b"PK\x03\x04", 45, 0, m.method, 0, 0x21, m.crc, FULL, FULL, len(name), 20)
    return fixed + name + extra


def central(m: Member, packed: int, offset: int) -> bytes:
    name, extra = m.name.encode(), struct.pack("<HHQQQ", 1, 24, m.size, packed, offset)
    fixed = CENTRAL.pack(
        b"PK\x01\x02", 45, 45, 0, m.method, 0, 0x21, m.crc, FULL, FULL, len(name), 28, 0, 0, 0,
        0o100644 << 16, FULL,
    )  # fmt: skip
    return fixed + name + extra


def directory(entries: list[bytes], at: int) -> bytes:
    """The central directory `entries` (starting at offset `at`), then the zip64 end records."""
    cd = b"".join(entries)
    n, end64_at = len(entries), at + len(cd)
    end64 = END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), at)
    locator = LOCATOR.pack(b"PK\x06\x07", 0, end64_at, 1)
    return cd + end64 + locator + END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, FULL, FULL, 0)


def zip_of(members: list[Member]) -> bytes:
    body, entries = b"", []
    for m in members:
        entries.append(central(m, len(m.data), len(body)))
        body += local_header(m, len(m.data)) + m.data
    return body + directory(entries, len(body))


def overlapping_zip(names: list[str], kernel: bytes, kernel_size: int) -> bytes:
    """Fifield's "better zip bomb": every member's deflate stream quotes the next member's
    local header in a stored block and runs on into the next, down to one shared `kernel`
    (a raw deflate stream of `kernel_size` bytes), so each member inflates the kernel again."""
    members = [Member(n, b"", 0) for n in names]
    header_len = [len(local_header(m, 0)) for m in members]
    packed, size = [len(kernel)], [kernel_size]
    for i in reversed(range(len(names) - 1)):  # member i: quote, header i+1, member i+1
        packed.insert(0, 5 + header_len[i + 1] + packed[0])
        size.insert(0, header_len[i + 1] + size[0])
    body, entries = b"", []
    for i, m in enumerate(members):
        m = Member(m.name, b"", size[i])
        entries.append(central(m, packed[i], len(body)))
        body += local_header(m, packed[i])
        if i + 1 < len(members):
            n = header_len[i + 1]
            body += struct.pack("<BHH", 0, n, n ^ 0xFFFF)  # a stored, not final, block of n
    body += kernel
    return body + directory(entries, len(body))


def declaring(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info


def tar_gz_of(info: tarfile.TarInfo, zeros_mib: int) -> bytes:
    """A tar.gz of `info`'s header and then `zeros_mib` MiB of zeros, whatever the header
    declares (the gzip trailer's CRC is left out: a reader that gets there has lost)."""
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return gzip_header + deflated_zeros(zeros_mib, header) + struct.pack("<LL", 0, 0)


def tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()
