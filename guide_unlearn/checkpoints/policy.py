"""Which globals a pickle may name, and the opcode scan that enforces it before anything is built (SPEC §3.1).

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
import zipfile
from dataclasses import dataclass
from typing import Any, Iterable, Union

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "NVIDIA_PICKLE_POLICY",
    "STORAGE_BYTES_POLICY",
    "TORCH_FILE_POLICY",
    "TORCH_LEGACY_MAGIC",
    "PicklePolicy",
    "globals_of",
    "iter_allowed",
    "qualified_name",
    "scan_pickle",
    "scan_torch_bytes",
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


def scan_pickle(stream: Union[bytes, bytearray, io.BufferedIOBase], policy: PicklePolicy,
                where: str = "pickle") -> list[str]:
    """Walk ONE pickle's opcodes (up to STOP) and return the globals it names, in order.

    Nothing is unpickled: :func:`pickletools.genops` only parses. A small symbolic stack resolves
    STACK_GLOBAL's module/name strings (including memoised ones); a name computed any other way, an
    extension-registry code or (unless the policy allows them) a persistent id is refused.

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
                check(qualified_name(module, attr), pos)
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise UnsafeCheckpointError(
                        f"{where}: refused a global whose module/name is computed at load time (byte {pos}); "
                        "official checkpoints never do this. The file was not loaded.")
                check(qualified_name(module, attr), pos)
                stack.append(_UNKNOWN)
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(
                    f"{where}: refused extension-registry global code {arg} (byte {pos}); it names a global "
                    "indirectly. The file was not loaded.")
            elif name in ("PERSID", "BINPERSID") and not policy.persistent_ids:
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


def scan_torch_bytes(data: bytes, policy: PicklePolicy = STORAGE_BYTES_POLICY, where: str = "storage bytes") -> None:
    """Scan a torch.save stream held in memory: a zip archive (every ``*.pkl`` member) or the legacy format
    (magic, protocol, sys-info, object and storage-key pickles, then raw tensor bytes).

    Raises UnsafeCheckpointError / CheckpointError like :func:`scan_pickle`.
    """
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [n for n in zf.namelist() if n.endswith(".pkl")]
                if not members:
                    raise CheckpointError(f"{where}: a zip archive without data.pkl is not a torch.save stream")
                for member in members:
                    scan_pickle(zf.read(member), policy, where=f"{where} ({member})")
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{where}: corrupted zip archive ({exc})") from None
        return
    stream = io.BytesIO(data)
    scan_pickle(stream, policy, where=where)  # whatever these bytes are, their first pickle must pass the scan
    stream.seek(0)
    if _first_constant(stream) != TORCH_LEGACY_MAGIC:
        raise CheckpointError(f"{where}: not a torch.save stream (no legacy magic number and not a zip archive)")
    stream.seek(0)
    for _ in range(5):  # magic number, protocol version, sys info, the object, the storage keys
        scan_pickle(stream, policy, where=where)


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
