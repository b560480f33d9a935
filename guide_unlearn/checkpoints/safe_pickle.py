"""Read NVIDIA "persistence" pickles without executing anything they contain (SPEC §3.1).

An official network pickle (stylegan2-ada / stylegan3 ``*.pkl``, EG3D ``ffhq*.pkl``, GUIDE's ``last.pkl``) is a
plain pickle whose modules rebuild themselves by ``exec``-ing the source text stored inside the file. Loading one
the normal way runs that text. Here it never runs:

1. :func:`scan_pickle` walks the opcodes with :mod:`pickletools` (which only parses) and refuses every global
   outside an explicit allow-list *before* a single object is built (:mod:`.policy`).
2. :class:`SafeUnpickler` then builds the objects, but every allowed global resolves to a replacement written
   here: persistent objects and ``training.*`` classes become inert :class:`ObjectStub` s that only record their
   state, tensors are rebuilt by validated wrappers, and the storage bytes handed to
   ``torch.storage._load_from_bytes`` are scanned with the same rules and then read with
   ``torch.load(weights_only=True)``. ``module_src`` is kept only as a hash (:mod:`.unpickler`).
3. :func:`flatten_module` turns the stubs of one network into a state dict with PyTorch's dotted names, plus the
   constructor kwargs (``_init_kwargs``) and plain attributes (``rendering_kwargs``,
   ``neural_rendering_resolution``, ...). The networks are never instantiated (:mod:`.nvidia`).

This module only re-exports those three so that ``guide_unlearn.checkpoints.safe_pickle`` keeps the names it has
always had. See docs/threat_model.md for what the allow-list admits and why.
"""

from __future__ import annotations

from .nvidia import NvidiaModule, flatten_module, load_nvidia_module, module_from_stub, read_nvidia_pickle, to_plain
from .policy import (
    NVIDIA_PICKLE_POLICY,
    STORAGE_BYTES_POLICY,
    TORCH_FILE_POLICY,
    TORCH_LEGACY_MAGIC,
    PicklePolicy,
    globals_of,
    iter_allowed,
    qualified_name,
    scan_pickle,
    scan_torch_bytes,
)
from .unpickler import AttrDict, ObjectStub, PersistentStub, SafeUnpickler

__all__ = [
    "NVIDIA_PICKLE_POLICY",
    "STORAGE_BYTES_POLICY",
    "TORCH_FILE_POLICY",
    "NvidiaModule",
    "ObjectStub",
    "PersistentStub",
    "PicklePolicy",
    "SafeUnpickler",
    "flatten_module",
    "load_nvidia_module",
    "module_from_stub",
    "qualified_name",
    "read_nvidia_pickle",
    "scan_pickle",
    "scan_torch_bytes",
    "to_plain",
]
