"""Builders of hostile files for the security tests: a tiny pickle assembler and writers of crafted torch zips,
safetensors files, model folders and patch folders. Every hostile file is made here, by the suite itself."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable, Optional

import torch


class Asm:
    """Write pickle opcodes by hand (protocol 4 header; no framing)."""

    def __init__(self, proto: int = 4):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def op(self, code: bytes, arg: bytes = b"") -> "Asm":
        self.b += code + arg
        return self

    def glob(self, module: str, name: str) -> "Asm":
        return self.op(b"c", f"{module}\n{name}\n".encode())

    def str(self, s: str) -> "Asm":
        data = s.encode()
        return self.op(b"X", struct.pack("<I", len(data)) + data)

    def bytes(self, data: bytes) -> "Asm":
        return self.op(b"B", struct.pack("<I", len(data)) + data)

    def int(self, n: int) -> "Asm":
        if -(1 << 31) <= n < (1 << 31):
            return self.op(b"J", struct.pack("<i", n))
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return self.op(b"\x8a", bytes([len(raw)]) + raw)

    def put(self, i: int) -> "Asm":
        return self.op(b"r", struct.pack("<I", i))

    def get(self, i: int) -> "Asm":
        return self.op(b"j", struct.pack("<I", i))

    def mark(self) -> "Asm":
        return self.op(b"(")

    def tuple(self) -> "Asm":
        return self.op(b"t")

    def tuple1(self) -> "Asm":
        return self.op(b"\x85")

    def tuple2(self) -> "Asm":
        return self.op(b"\x86")

    def tuple3(self) -> "Asm":
        return self.op(b"\x87")

    def empty_tuple(self) -> "Asm":
        return self.op(b")")

    def empty_dict(self) -> "Asm":
        return self.op(b"}")

    def empty_list(self) -> "Asm":
        return self.op(b"]")

    def none(self) -> "Asm":
        return self.op(b"N")

    def true(self) -> "Asm":
        return self.op(b"\x88")

    def false(self) -> "Asm":
        return self.op(b"\x89")

    def reduce(self) -> "Asm":
        return self.op(b"R")

    def build(self) -> "Asm":
        return self.op(b"b")

    def newobj(self) -> "Asm":
        return self.op(b"\x81")

    def setitem(self) -> "Asm":
        return self.op(b"s")

    def setitems(self) -> "Asm":
        return self.op(b"u")

    def append(self) -> "Asm":
        return self.op(b"a")

    def appends(self) -> "Asm":
        return self.op(b"e")

    def pop(self) -> "Asm":
        return self.op(b"0")

    def stop(self) -> bytes:
        self.b += b"."
        return bytes(self.b)

    def np_dtype(self, code: str, state: Optional[tuple] = None) -> "Asm":
        """numpy.dtype(code, False, True) [+ BUILD state]."""
        self.glob("numpy", "dtype").str(code).false().true().tuple3().reduce()
        if state is not None:
            self.plain(state).build()
        return self

    def plain(self, value) -> "Asm":
        """Push a constant made of tuples, strs, ints, bytes, None and bools."""
        if value is None:
            return self.none()
        if value is True:
            return self.true()
        if value is False:
            return self.false()
        if isinstance(value, int):
            return self.int(value)
        if isinstance(value, str):
            return self.str(value)
        if isinstance(value, bytes):
            return self.bytes(value)
        if isinstance(value, tuple):
            self.mark()
            for v in value:
                self.plain(v)
            return self.tuple()
        raise TypeError(type(value))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def rewrite_zip(data: bytes, edit: Callable[[str, bytes], Optional[tuple]], compression: int = zipfile.ZIP_STORED,
                extra: tuple = ()) -> bytes:
    """A copy of a zip archive with each (name, body) passed through ``edit`` (None drops the entry), then the
    ``extra`` (name, body) entries appended."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zi, zipfile.ZipFile(out, "w", compression) as zo:
        for info in zi.infolist():
            res = edit(info.filename, zi.read(info))
            if res is not None:
                zo.writestr(res[0], res[1])
        for name, body in extra:
            zo.writestr(name, body)
    return out.getvalue()


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def system_pickle(command: str) -> bytes:
    """A pickle that runs ``os.system(command)`` when loaded by an unrestricted unpickler."""
    return Asm(2).glob("os", "system").str(command).tuple1().reduce().stop()


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _cd_entry(name: str, method: int, crc: int, csize: int, usize: int, offset: int) -> bytes:
    n = name.encode()
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, usize, len(n), 0, 0, 0,
                       0, 0, offset) + n


def _local(name: str, method: int, crc: int, csize: int, usize: int) -> bytes:
    n = name.encode()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, usize, len(n), 0) + n


def two_directory_zip(good: bytes, edit: Callable[[str, bytes], Optional[tuple]]) -> bytes:
    """A copy of the zip ``good`` carrying TWO central directories: Python's zipfile finds the honest one right
    before the end record (it adds the gap it sees as prepended data to every offset), torch's reader (miniz) takes
    the end record's absolute offset, where a second directory lists what ``edit(name, body)`` returns instead
    (``(method, stored bytes, uncompressed size)``, or None to keep the entry)."""
    import zlib

    zf = zipfile.ZipFile(io.BytesIO(good))
    body, honest, other = bytearray(), [], []
    for info in zf.infolist():
        data = zf.read(info)
        crc = zlib.crc32(data)
        offset = len(body)
        body += _local(info.filename, 0, crc, len(data), len(data)) + data
        honest.append(_cd_entry(info.filename, 0, crc, len(data), len(data), offset))
        swap = edit(info.filename, data)
        if swap is None:
            other.append(_cd_entry(info.filename, 0, crc, len(data), len(data), offset))
            continue
        method, stored, usize = swap
        offset = len(body)
        body += _local(info.filename, method, zlib.crc32(stored) if method == 0 else 0, len(stored), usize) + stored
        other.append(_cd_entry(info.filename, method, zlib.crc32(stored) if method == 0 else 0, len(stored), usize,
                               offset))
    torch_cd, python_cd = b"".join(other), b"".join(honest)
    assert len(torch_cd) == len(python_cd)
    start = len(body)
    body += torch_cd + python_cd
    n = len(honest)
    body += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(torch_cd), start, 0)
    return bytes(body)


def deflated_zeros(n: int) -> bytes:
    """A raw deflate stream that inflates to ``n`` zero bytes (about n / 1000 bytes long)."""
    import zlib

    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk, out, left = b"\0" * (1 << 24), [], n
    while left > 0:
        out.append(z.compress(chunk[:min(left, len(chunk))]))
        left -= len(chunk)
    return b"".join(out) + z.flush()


def yaml_alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A model card whose YAML header is a few hundred bytes of aliases expanding to width**levels strings."""
    lines = ["---", "guide_unlearn:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines + ["---", "", "# card", ""])


__all__ = ["Asm", "deflated_zeros", "nested_json", "pickle", "rewrite_zip", "safetensors_bytes", "system_pickle",
           "torch_bytes", "two_directory_zip", "write", "yaml_alias_bomb"]
