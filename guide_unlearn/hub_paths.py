"""Two rules about huggingface_hub names and files that the model card, the hub client and the patch loader all
apply: which strings are hub repo ids, and which symbolic links are the hub cache's own. A leaf module (it imports only
the reading gate), so that :mod:`guide_unlearn.card`, :mod:`guide_unlearn.hub` and :mod:`guide_unlearn.patch`
share the rules without importing one another in a circle.
"""

from __future__ import annotations

import os
import re
from typing import Union

__all__ = ["is_hub_cache_link", "looks_like_repo_id"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def looks_like_repo_id(name: str) -> bool:
    """True for a hub model id ``owner/name`` (no scheme, no ``..``, no leading ``./`` or ``/``)."""
    return bool(_REPO_ID.match(str(name))) and ".." not in str(name) and not str(name).endswith(".git")


def is_hub_cache_link(path: Union[str, os.PathLike]) -> bool:
    """True when ``path`` is a symbolic link that huggingface_hub's cache made: it sits under
    ``<cache>/models--<owner>--<name>/snapshots/<revision>/`` and resolves to a regular file directly inside the
    same ``models--<owner>--<name>/blobs/`` folder. Every other link is not allowed (loaders refuse it). The rule
    itself is the reading gate's (:func:`guide_unlearn.gate.hub_blob_link`), which every reader goes through."""
    from .gate.files import hub_blob_link

    return hub_blob_link(path)
