"""Which globals a pickle may name, and the opcode scan that enforces it before anything is built (docs/checkpoints.md).

- :class:`PicklePolicy` and the three allow-lists: :data:`NVIDIA_PICKLE_POLICY` (network pickles),
  :data:`STORAGE_BYTES_POLICY` (the tensor storages embedded in them) and :data:`TORCH_FILE_POLICY` (``torch.save``
  checkpoints).
- :func:`scan_pickle` walks one pickle's opcodes with :mod:`pickletools`, which only parses, and refuses every
  global outside the policy; :func:`scan_torch_bytes` does the same for every pickle of an in-memory
  ``torch.save`` stream (zip or legacy).

Nothing here unpickles: the restricted unpickler (:mod:`.unpickler`) runs only on bytes this scan accepted.
See docs/threat_model.md for what the allow-lists admit and why.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "NVIDIA_PICKLE_POLICY",
    "STORAGE_BYTES_POLICY",
    "TORCH_FILE_POLICY",
    "TORCH_LEGACY_MAGIC",
    "BoundedReader",
    "PicklePolicy",
    "globals_of",
    "iter_allowed",
    "qualified_name",
    "scan_legacy_stream",
    "scan_pickle",
    "scan_torch_bytes",
    "scan_torch_zip",
]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a legacy (non-zip) torch.save stream
_STORAGE_TYPES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
)


# ----------------------------------------------------------------------------------------------------------------
# Policies: which globals a pickle may name.


@dataclass(frozen=True)
class PicklePolicy:
    """An explicit allow-list of pickle globals.

    name:              shown in error messages ("NVIDIA network pickle", ...).
    exact:             fully qualified names (``module.name``) that may appear.
    stub_prefixes:     module prefixes whose classes become inert stubs (``training`` for NVIDIA pickles).
    persistent_ids:    whether PERSID / BINPERSID opcodes may appear (torch.save streams use them for storages).
    """

    name: str
    exact: frozenset
    stub_prefixes: tuple = ()
    persistent_ids: bool = False

    def allows(self, qualified: str) -> bool:
        """True when ``qualified`` (``module.name``) is admitted."""
        if qualified in self.exact:
            return True
        module, _, attr = qualified.rpartition(".")
        return bool(attr) and attr.isidentifier() and any(
            module == p or module.startswith(p + ".") for p in self.stub_prefixes
        ) and all(part.isidentifier() for part in module.split("."))


_TORCH_MODULE_STUBS = (
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict", "torch.nn.modules.activation.Softplus",
    "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.linear.Identity",
)
_NUMPY_NAMES = (
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
)
_TENSOR_NAMES = (
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
)

NVIDIA_PICKLE_POLICY = PicklePolicy(
    name="NVIDIA network pickle",
    exact=frozenset(
        ("torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict", "dnnlib.EasyDict",
         "collections.OrderedDict", "builtins.set", "builtins.frozenset", "torch.storage._load_from_bytes")
        + _TENSOR_NAMES + _TORCH_MODULE_STUBS + _NUMPY_NAMES
    ),
    stub_prefixes=("training",),
)

STORAGE_BYTES_POLICY = PicklePolicy(
    name="tensor storage bytes (legacy torch.save)",
    exact=frozenset(tuple(f"torch.{s}" for s in _STORAGE_TYPES)
                    + ("torch._utils._rebuild_tensor_v2", "collections.OrderedDict")),
    persistent_ids=True,
)

TORCH_FILE_POLICY = PicklePolicy(
    name="torch.save checkpoint",
    exact=frozenset(
        tuple(f"torch.{s}" for s in _STORAGE_TYPES)
        + _TENSOR_NAMES
        + ("collections.OrderedDict", "builtins.set", "builtins.frozenset", "torch.Size",
           # training scripts (rosinality, e4e) save their argparse options; a Namespace is a bag of attributes
           "argparse.Namespace")
    ),
    persistent_ids=True,
)


# ----------------------------------------------------------------------------------------------------------------
# Opcode scan (parses, builds nothing).

_MARK = object()
_UNKNOWN = object()
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}


def qualified_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 would import it: protocol-2 names (``__builtin__``, ``copy_reg``) are mapped the
    way the unpickler maps them, so the allow-list sees the real target."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _refuse(policy: PicklePolicy, qualified: str, pos: int, where: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{where}: refused global '{qualified}' (byte {pos}); it is not on the allow-list for a {policy.name}, and "
        f"importing or calling it could run code. The file was not loaded. Only use checkpoints from their official "
        f"source; see docs/threat_model.md for what is admitted."
    )


class BoundedReader(io.RawIOBase):
    """A read-only view of a binary file that never reads (or allocates for) more than the ``size`` bytes the
    file had when it was checked: ``read(n)`` with an attacker-declared ``n`` returns at most what is left, so
    a pickle's length fields cannot make the parser allocate more than the file holds."""

    def __init__(self, f: Any, size: int):
        super().__init__()
        self._f, self._size = f, int(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def _left(self) -> int:
        return max(0, self._size - self._f.tell())

    def read(self, n: int = -1) -> bytes:
        left = self._left()
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        left = self._left()
        return self._f.readline(left if limit is None or limit < 0 else min(limit, left))

    def peek(self, n: int = 0) -> bytes:
        pos = self._f.tell()
        data = self.read(max(1, n))
        self._f.seek(pos)
        return data


class _Global(str):
    """A resolved global on the symbolic stack (its qualified name)."""


class _Tuple(tuple):
    """A tuple on the symbolic stack, with its nesting depth."""

    depth = 1


MAX_TUPLE_DEPTH = 64
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def scan_pickle(stream: Union[bytes, bytearray, io.BufferedIOBase], policy: PicklePolicy,
                where: str = "pickle", on_persid: Optional[Callable[[Any, int], None]] = None) -> list[str]:
    """Walk ONE pickle's opcodes (up to STOP) and return the globals it names, in order.

    Nothing is unpickled: :func:`pickletools.genops` only parses. A small symbolic stack resolves
    STACK_GLOBAL's module/name strings (including memoised ones); a name computed any other way, an
    extension-registry code or (unless the policy allows them) a persistent id is refused. Text persistent ids
    (``PERSID``) are always refused; each binary one (``BINPERSID``) is handed to ``on_persid(value, byte)`` as
    far as it is made of constants (strings, integers, globals, tuples of them), so a caller can check the sizes
    it declares before anything is allocated for them.

    Raises:
        UnsafeCheckpointError: a global outside ``policy`` (the message names it).
        CheckpointError: the bytes are truncated or not a pickle.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    found: list[str] = []
    stack: list[Any] = []
    memo: dict[Any, Any] = {}

    def pop() -> Any:
        if not stack:
            raise CheckpointError(f"{where}: malformed pickle (stack underflow); the file is corrupted")
        return stack.pop()

    def pop_to_mark() -> None:
        while True:
            if pop() is _MARK:
                return

    def check(qualified: str, pos: int) -> None:
        if not policy.allows(qualified):
            raise _refuse(policy, qualified, pos, where)
        found.append(qualified)

    try:
        for op, arg, pos in pickletools.genops(stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                qualified = qualified_name(module, attr)
                check(qualified, pos)
                if name == "GLOBAL":
                    stack.append(_Global(qualified))
                    continue
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if not (type(module) is str and type(attr) is str):
                    raise UnsafeCheckpointError(
                        f"{where}: refused a global whose module/name is computed at load time (byte {pos}); "
                        "official checkpoints never do this. The file was not loaded.")
                qualified = qualified_name(module, attr)
                check(qualified, pos)
                stack.append(_Global(qualified))
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(
                    f"{where}: refused extension-registry global code {arg} (byte {pos}); it names a global "
                    "indirectly. The file was not loaded.")
            elif name == "PERSID" or (name == "BINPERSID" and not policy.persistent_ids):
                raise UnsafeCheckpointError(
                    f"{where}: refused a persistent id (byte {pos}); a {policy.name} has none. The file was not "
                    "loaded.")
            # stack bookkeeping (only strings and memo references matter)
            if name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else _UNKNOWN)
                continue
            if name == "MARK":
                stack.append(_MARK)
                continue
            if name in _INT_OPS:
                stack.append(arg if isinstance(arg, int) else _UNKNOWN)
                continue
            if name in _TUPLE_N or name == "TUPLE":
                if name == "TUPLE":
                    items = []
                    while (item := pop()) is not _MARK:
                        items.append(item)
                    items.reverse()
                else:
                    items = [pop() for _ in range(_TUPLE_N[name])][::-1]
                    if any(i is _MARK for i in items):
                        raise CheckpointError(f"{where}: malformed pickle (tuple over a mark, byte {pos})")
                tup = _Tuple(items)
                tup.depth = 1 + max((getattr(i, "depth", 0) for i in items), default=0)
                if tup.depth > MAX_TUPLE_DEPTH:
                    raise CheckpointError(f"{where}: tuples nested deeper than {MAX_TUPLE_DEPTH} (byte {pos}); hashing "
                                          "or walking them would exhaust the stack. The file was not loaded.")
                stack.append(tup)
                continue
            if name == "EMPTY_TUPLE":
                stack.append(())
                continue
            if name == "BINPERSID":
                value = pop()
                if on_persid is not None:
                    on_persid(value, pos)
                stack.append(_UNKNOWN)
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _UNKNOWN
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _UNKNOWN
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, _UNKNOWN))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else _UNKNOWN)
                continue
            before = op.stack_before
            if pickletools.markobject in before:
                pop_to_mark()
                for _ in range(before.index(pickletools.markobject)):
                    pop()
            else:
                for _ in before:
                    pop()
            stack.extend(_UNKNOWN for _ in op.stack_after)
    except ValueError as exc:  # pickletools: truncated stream / unknown opcode
        raise CheckpointError(
            f"{where}: not a complete pickle ({exc}); the file is truncated or corrupted. Download it again."
        ) from None
    return found


_ELEMENT_SIZE = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
}


def _storage_size_check(total: int, where: str) -> Callable[[Any, int], None]:
    """An ``on_persid`` callback for legacy torch.save streams: every storage id must be
    ('storage', torch.<Type>Storage, key, location, numel, ...) with numel * element size <= ``total`` bytes,
    so torch never allocates more for a storage than the stream can fill."""

    def check(value: Any, pos: int) -> None:
        ok = (isinstance(value, tuple) and len(value) in (5, 6) and value[0] == "storage"
              and isinstance(value[1], _Global) and type(value[4]) is int)
        if not ok:
            raise UnsafeCheckpointError(f"{where}: refused a persistent id that is not a plain storage reference "
                                        f"(byte {pos}); the file was not loaded")
        size = _ELEMENT_SIZE.get(str(value[1]).rpartition(".")[2])
        if size is None or not 0 <= value[4] * size <= total:
            raise CheckpointError(f"{where}: a storage declares {value[4]} elements, more than the {total} bytes "
                                  "of the file can hold; the file is corrupted or hostile")

    return check


def _zip_size_limit(size: int) -> int:
    """Total uncompressed bytes a torch zip of ``size`` bytes may declare (torch stores entries uncompressed)."""
    return 4 * size + (16 << 20)


def _zip_listing(source: Any, where: str) -> list:
    """Python's view of a zip archive: its entries as ``zipfile`` reads them."""
    try:
        with zipfile.ZipFile(source) as zf:
            return zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, struct.error) as exc:
        raise CheckpointError(f"{where}: corrupted zip archive ({str(exc)[:200]}); download it again") from None


def _torch_listing(source: Any, where: str) -> tuple[Any, list[tuple[str, int, int]]]:
    """torch's view of the same archive, read by torch's own reader (miniz, which finds the central directory by
    its own rule): (the reader, [(record name without the archive folder, size, local header offset)])."""
    import torch  # only here: the format-level scan of plain pickles must not need torch

    try:
        if hasattr(source, "seek"):
            source.seek(0)
        reader = torch._C.PyTorchFileReader(source if hasattr(source, "read") else str(source))
        records = [(n, int(reader.get_record_size(n)), int(reader.get_record_header_offset(n)))
                   for n in reader.get_all_records()]
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: torch cannot read the archive ({str(exc).splitlines()[0][:200]}); the file "
                              "is corrupted") from None
    return reader, records


def scan_torch_zip(source: Any, size: int, policy: PicklePolicy, where: str) -> list[str]:
    """Check and scan a torch.save zip archive (a path or a seekable binary stream of ``size`` bytes) by the
    rule torch's own reader follows.

    The archive is listed twice, by Python's ``zipfile`` and by torch's reader, and refused unless both read the
    same central directory (same entry names, sizes and header offsets: a file carrying a second central directory
    for one of them is refused). Then, on torch's view: every entry lies under one top folder ``<archive>/``, no two
    names are equal ignoring case (torch looks names up case-insensitively), the only pickle entry is
    ``<archive>/data.pkl`` spelled exactly so, only stored or deflated entries, and the sizes torch will allocate
    total at most :func:`_zip_size_limit`. The pickle is then read with torch's reader — the exact bytes
    ``torch.load`` will unpickle — and scanned.

    Raises UnsafeCheckpointError / CheckpointError like :func:`scan_pickle`.
    """
    infos = _zip_listing(source, where)
    if not infos:
        raise CheckpointError(f"{where}: an empty zip archive is not a torch.save checkpoint")
    prefix = infos[0].filename.split("/", 1)[0] + "/"
    folded = [i.filename.casefold() for i in infos]
    if len(set(folded)) != len(folded):
        raise UnsafeCheckpointError(f"{where}: refused a zip archive with two entries of the same name (ignoring "
                                    "case); torch would read one of them unscanned. The file was not loaded.")
    for info in infos:
        name = info.filename
        if not name.startswith(prefix) or "\\" in name or "\x00" in name:
            raise UnsafeCheckpointError(f"{where}: refused zip entry {name[:100]!r} outside the archive folder "
                                        f"{prefix!r}; not a torch.save checkpoint. The file was not loaded.")
        lowered = name.casefold()
        if (lowered.endswith(".pkl") or lowered.rsplit("/", 1)[-1] in ("data.pkl", "constants.pkl")) \
                and name != prefix + "data.pkl":
            raise UnsafeCheckpointError(f"{where}: refused pickle entry {name[:100]!r}: the only pickle a torch.save "
                                        f"checkpoint holds is {prefix}data.pkl, spelled exactly so. The file was not "
                                        "loaded.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsafeCheckpointError(f"{where}: refused zip entry {name[:100]!r} compressed with method "
                                        f"{info.compress_type}; torch.save stores entries uncompressed")
    if prefix + "data.pkl" not in {i.filename for i in infos}:
        raise CheckpointError(f"{where}: a zip archive without {prefix}data.pkl is not a torch.save checkpoint")
    reader, records = _torch_listing(source, where)
    python_view = sorted((i.filename[len(prefix):], i.file_size, i.header_offset) for i in infos)
    if sorted(records) != python_view:
        raise UnsafeCheckpointError(f"{where}: refused a zip archive whose central directories disagree: torch's "
                                    "reader and Python's zipfile see different entries, sizes or offsets (a second "
                                    "directory hidden in the file). The file was not loaded.")
    declared = sum(n for _, n, _ in records)
    if declared > _zip_size_limit(size):
        raise CheckpointError(f"{where}: zip entries declare {declared} bytes once unpacked from {size} bytes; "
                              "refusing a decompression bomb")
    try:
        data = reader.get_record("data.pkl")
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: torch cannot read the archive's data.pkl ({str(exc).splitlines()[0][:200]}); "
                              "the file is corrupted") from None
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    return scan_pickle(bytes(data), policy, where=f"{where} ({prefix}data.pkl)")


def scan_torch_bytes(data: bytes, policy: PicklePolicy = STORAGE_BYTES_POLICY, where: str = "storage bytes") -> None:
    """Scan a torch.save stream held in memory: a zip archive (by :func:`scan_torch_zip`'s rule) or the legacy
    format (magic, protocol, sys-info, object and storage-key pickles, then raw tensor bytes), whose storage ids
    may not declare more elements than the stream holds.

    Raises UnsafeCheckpointError / CheckpointError like :func:`scan_pickle`.
    """
    if data[:4] == b"PK\x03\x04":
        scan_torch_zip(io.BytesIO(data), len(data), policy, where)
        return
    scan_legacy_stream(io.BytesIO(data), len(data), policy, where)


def scan_legacy_stream(stream: Any, total: int, policy: PicklePolicy, where: str) -> None:
    """Scan the five pickles of a legacy (pre-1.6) torch.save stream; storage ids are size-checked."""
    stream.seek(0)
    scan_pickle(stream, policy, where=where)  # whatever these bytes are, their first pickle must pass the scan
    stream.seek(0)
    if _first_constant(stream) != TORCH_LEGACY_MAGIC:
        raise CheckpointError(f"{where}: not a torch.save stream (no legacy magic number and not a zip archive)")
    stream.seek(0)
    check = _storage_size_check(total, where)
    for _ in range(5):  # magic number, protocol version, sys info, the object, the storage keys
        scan_pickle(stream, policy, where=where, on_persid=check)


def _first_constant(stream: io.BytesIO) -> Any:
    """The argument of the first data opcode of a pickle (parsed, not unpickled), or None."""
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name not in ("PROTO", "FRAME"):
                return arg
    except ValueError:
        return None
    return None


def globals_of(data: bytes, policy: PicklePolicy) -> list[str]:
    """Convenience: the globals named by a pickle held in memory (scan only)."""
    return scan_pickle(data, policy)


def iter_allowed(policy: PicklePolicy) -> Iterable[str]:
    """The exact names a policy admits, sorted (for docs and tests)."""
    return sorted(policy.exact)
