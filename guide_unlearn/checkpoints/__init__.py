"""Format-level checkpoint handling, independent of any model family.

- :mod:`.policy`: pickle allow-lists and the opcode scan that refuses other globals before anything is built.
- :mod:`.unpickler`: the restricted unpickler; NVIDIA persistence objects become inert stubs.
- :mod:`.nvidia`: NVIDIA network pickles read without executing them (scan + stubs -> state dict + config).
- :mod:`.torch_zip`: ``torch.save`` files via ``torch.load(weights_only=True)`` after the same kind of scan.
- :mod:`.formats`: what a file is (and what it seems to be when it is not usable).
- :mod:`.resolve`: registry name -> local file (cache in huggingface_hub's layout, download with progress).

Model families (``guide_unlearn.adapters.*``) turn the resulting state dicts into modules; nothing here imports them.
"""

from .formats import FileFormat, describe_file, detect_format
from .nvidia import NvidiaModule, flatten_module, load_nvidia_module, read_nvidia_pickle
from .policy import NVIDIA_PICKLE_POLICY, STORAGE_BYTES_POLICY, TORCH_FILE_POLICY, PicklePolicy, scan_pickle
from .resolve import CheckpointSource, cache_root, cached_path, download, offline, resolve_file
from .torch_zip import load_state_file, load_torch_file, namespace_to_dict

__all__ = [
    "CheckpointSource", "FileFormat", "NVIDIA_PICKLE_POLICY", "NvidiaModule", "PicklePolicy", "STORAGE_BYTES_POLICY",
    "TORCH_FILE_POLICY", "cache_root", "cached_path", "describe_file", "detect_format", "download", "flatten_module",
    "load_nvidia_module", "load_state_file", "load_torch_file", "namespace_to_dict", "offline", "read_nvidia_pickle",
    "resolve_file", "scan_pickle",
]
