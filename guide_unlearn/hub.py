"""Sharing forget patches on the Hugging Face Hub: the model card, push by repo id, pull by repo id.

A forget patch folder (see :mod:`guide_unlearn.patch`) also carries a ``README.md`` model card whose YAML header
holds the hub's usual fields (``library_name``, ``tags``, ``license``, ``base_model``) and a ``guide_unlearn``
block (:data:`CARD_FORMAT`, version :data:`CARD_VERSION`, specified in docs/patch_format.md): which base the patch
is for, how it was made, the request ids and, when the patch was audited, the audit summary. The card never holds
a photo, a latent code or a name, only what the caller put in a request id.

Pulling: :func:`resolve_patch_folder` turns ``"user/repo"`` (optionally a revision and a sub-folder) into a folder
of the local huggingface_hub cache, fetching only the patch's files. The loader then applies its usual checks; the
one kind of symbolic link it follows is the cache's own ``snapshots/<rev>/<file>`` -> ``../../blobs/<hash>`` link
of the same repo (:func:`is_hub_cache_link`).

This module is core: it knows the patch format and huggingface_hub, never a backend or a pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .config import PRESENTATION_FIELDS, ROBUST_FIELDS
from .errors import PatchError

if TYPE_CHECKING:  # pragma: no cover
    from .patch import ForgetPatch

__all__ = [
    "CARD_FILE",
    "CARD_FORMAT",
    "CARD_VERSION",
    "HubPatchNotFoundError",
    "card_block",
    "erase_config_digest",
    "hub_cache_dir",
    "is_hub_cache_link",
    "looks_like_repo_id",
    "model_card",
    "patch_info",
    "push_patch",
    "read_card_block",
    "resolve_patch_folder",
]

CARD_FILE = "README.md"
CARD_FORMAT = "guide_unlearn.model_card"
CARD_VERSION = 1
TAGS = ("unlearning", "identity-unlearning", "guide")
# EraseConfig fields that change how a run behaves, never what it produces: left out of the recipe digest (one
# list for the whole library: the resume check and EraseConfig.digest() use the same).
RUNTIME_FIELDS = PRESENTATION_FIELDS
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class HubPatchNotFoundError(PatchError, FileNotFoundError):
    """A name is neither a local patch folder nor a patch found on the hub (or in its local cache)."""


# -- the model card -------------------------------------------------------------------------------------------
def erase_config_digest(erase_config: Optional[Mapping[str, Any]]) -> Optional[str]:
    """``"sha256:<16 hex>"`` of the erase recipe: sorted-key JSON of ``erase_config`` minus
    :data:`RUNTIME_FIELDS`. Two patches made with the same recipe share it. None when no config is recorded."""
    if not erase_config:
        return None
    recipe = {k: v for k, v in dict(erase_config).items() if k not in RUNTIME_FIELDS}
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


def _request_ids(metadata: Mapping[str, Any]) -> list[str]:
    """The caller's pseudonymous request ids: metadata ``requests`` (several people) or ``request_id``."""
    ids: list[str] = []
    for r in metadata.get("requests") or []:
        if isinstance(r, Mapping) and r.get("request_id") is not None:
            ids.append(str(r["request_id"]))
    if metadata.get("request_id") is not None:
        ids.append(str(metadata["request_id"]))
    return ids


def _license_fields(license: Union[None, str, Mapping[str, Any]], metadata: Mapping[str, Any]) -> dict[str, str]:
    """{'license', 'license_name', 'license_link'} from the caller's value, else the base's (``base_license``)."""
    value = license if license is not None else metadata.get("base_license")
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"license": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("license"), str):
        raise PatchError(f"license must be a hub licence id ('apache-2.0', 'other', ...) or a mapping with "
                         f"'license' (and 'license_name' / 'license_link' for 'other'); got {value!r}")
    out = {k: str(value[k]) for k in ("license", "license_name", "license_link") if value.get(k)}
    if not _LICENSE_ID.match(out["license"]):
        raise PatchError(f"license {out['license']!r} is not a hub licence id (lower case, e.g. 'apache-2.0', "
                         "'cc-by-nc-4.0', or 'other' with a license_name and license_link)")
    if out["license"] == "other" and not out.get("license_name"):
        raise PatchError("license 'other' needs a license_name (a short lower-case id) and a license_link; pass "
                         "license={'license': 'other', 'license_name': ..., 'license_link': ...}")
    return out


def card_block(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``guide_unlearn`` block of the card's YAML from a patch's forget_patch.json dict (format version 1)."""
    erase_config = meta.get("erase_config") or {}
    preset = None
    if erase_config:
        robust = any(erase_config.get(k) for k in ROBUST_FIELDS)
        preset = "paper" if erase_config.get("full_finetune") else ("robust" if robust else "lora")
    block: dict[str, Any] = {
        "card_format": CARD_FORMAT,
        "card_version": CARD_VERSION,
        "patch_format_version": meta.get("format_version"),
        "patch_id": meta.get("patch_id"),
        "kind": meta.get("kind"),
        "base_name": meta.get("base_name"),
        "generator_family": meta.get("generator_family"),
        "base_fingerprint": meta.get("base_fingerprint"),
        "preset": preset,
        "erase_config_digest": erase_config_digest(erase_config),
        "request_ids": _request_ids(meta),
        "final_losses": meta.get("final_losses"),
    }
    per_request = [r.get("final_losses") for r in meta.get("requests") or [] if isinstance(r, Mapping)]
    if any(per_request):
        block["request_final_losses"] = per_request
    audit = meta.get("audit")
    if isinstance(audit, Mapping):
        block["audit"] = {k: audit[k] for k in ("protocol", "metrics", "networks", "date") if k in audit}
    block["library_version"] = meta.get("library_version")
    return json.loads(json.dumps(block, default=str))  # plain YAML-safe types only


def model_card(meta: Mapping[str, Any], license: Union[None, str, Mapping[str, Any]] = None,
               base_model: Optional[str] = None, repo_id: Optional[str] = None,
               subfolder: Optional[str] = None):
    """The patch's :class:`huggingface_hub.ModelCard` from its forget_patch.json dict.

    license:    hub licence id or {'license', 'license_name', 'license_link'}; None = the base model's licence
                as recorded in the patch (``base_license``), else no licence field.
    base_model: a hub model id of the base generator; only a ``owner/name`` id is written (registry names and
                local paths are not hub models).
    repo_id, subfolder: where the card will live (used in the usage snippet); None = a local folder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if base_model is not None and not looks_like_repo_id(base_model):
        raise PatchError(f"base_model {base_model!r} is not a hub model id ('owner/name'); leave it unset for "
                         "registry names and local checkpoints")
    kind = meta.get("kind")
    tags = list(TAGS) + (["lora"] if kind == "lora" else ["weight-delta"])
    lic = _license_fields(license, meta)
    data = ModelCardData(library_name="guide_unlearn", tags=tags, base_model=base_model, **lic)
    block = card_block(meta)
    data.guide_unlearn = block
    card = ModelCard.from_template(data, template_str=_TEMPLATE, **_template_values(meta, block, lic, repo_id,
                                                                                   subfolder))
    return card


def read_card_block(card_path: Union[str, os.PathLike]) -> Optional[dict[str, Any]]:
    """The ``guide_unlearn`` block of a card file (bounded: cards over 1 MiB are refused), or None without one."""
    from huggingface_hub import ModelCard

    path = Path(card_path)
    if path.is_symlink() and not is_hub_cache_link(path):
        raise PatchError(f"{path} is a symbolic link; a card must be a regular file (or a huggingface_hub cache "
                         "link into the same repo's blobs/)")
    if not path.is_file():
        return None
    if path.stat().st_size > (1 << 20):
        raise PatchError(f"{path} is over 1 MiB; a forget patch card is a few kB — refusing it")
    card = ModelCard.load(path)
    block = card.data.to_dict().get("guide_unlearn")
    return dict(block) if isinstance(block, Mapping) else None


def refreshed_card(card_path: Union[str, os.PathLike], meta: Mapping[str, Any]):
    """The card of ``meta`` rebuilt for an existing card file, keeping the choices its author made when it was
    written (licence fields and a hub ``base_model``), so refreshing a card (e.g. after an audit) never drops a
    custom licence. Bounded like :func:`read_card_block`. -> :class:`huggingface_hub.ModelCard`."""
    from huggingface_hub import ModelCard

    read_card_block(card_path)  # the same checks: regular file, at most 1 MiB
    old = ModelCard.load(Path(card_path)).data.to_dict()
    lic = {k: old[k] for k in ("license", "license_name", "license_link") if isinstance(old.get(k), str)}
    base = old.get("base_model") if isinstance(old.get("base_model"), str) else None
    try:
        return model_card(meta, license=lic or None, base_model=base if base and looks_like_repo_id(base) else None)
    except PatchError:  # an old card's fields that are no longer valid: fall back to the defaults
        return model_card(meta)


def _template_values(meta, block, lic, repo_id, subfolder) -> dict[str, str]:
    where = json.dumps(repo_id) if repo_id else '"path/to/this/folder"'
    sub = f", subfolder={json.dumps(subfolder)}" if subfolder else ""
    base = block.get("base_name") or "the base model named in forget_patch.json"
    fam = block.get("generator_family") or "generator"
    if lic:
        lic_text = f"`{lic['license']}`" + (f" ({lic.get('license_name')}, {lic.get('license_link', '')})"
                                            if lic["license"] == "other" else "")
        lic_line = f"Licence: {lic_text}. A patch is a derivative of its base model: the base's licence applies too."
    else:
        lic_line = "Licence: not stated. A patch is a derivative of its base model: the base's licence applies."
    losses = block.get("final_losses") or {}
    loss_text = ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if isinstance(v, (int, float))) or "not recorded"
    audit = block.get("audit")
    if audit:
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                            for k, v in (audit.get("metrics") or {}).items())
        audit_text = (f"Audited with protocol `{audit.get('protocol')}` ({audit.get('date', 'date not recorded')}): "
                      f"{metrics or 'no metrics'}. The networks used are listed in the YAML header; figures made "
                      "with stand-in networks are not FID / LPIPS / ArcFace figures.")
    else:
        audit_text = "This patch carries no audit summary: nothing here shows how well it erases or preserves."
    n_req = len(block.get("request_ids") or [])
    who = (f"{n_req} erasure request(s) (ids: {', '.join('`%s`' % _plain_text(r) for r in block['request_ids'])})"
           if n_req else "one erasure request (no request id recorded)")
    return {
        "kind": str(block.get("kind")), "base": str(base), "family": str(fam),
        "fingerprint": str(block.get("base_fingerprint")), "preset": str(block.get("preset")),
        "digest": str(block.get("erase_config_digest")), "patch_id": str(block.get("patch_id")),
        "where": where, "sub": sub, "who": who, "losses": loss_text, "audit": audit_text, "license_line": lic_line,
        "base_ref": json.dumps(block.get("base_name") or "<the base model>"),
    }


def _plain_text(text: str, limit: int = 80) -> str:
    """A caller's string made safe for one line of Markdown: printable, no backticks, at most ``limit`` chars."""
    clean = "".join(c if c.isprintable() and c != "`" else "?" for c in str(text))
    return clean[:limit] + ("…" if len(clean) > limit else "")


# The human part of the card. Jinja2 is not needed: huggingface_hub formats `{{ name }}` fields with it when
# installed, and this template uses nothing else.
_TEMPLATE = """---
{{ card_data }}
---

# Forget patch `{{ patch_id }}` for {{ base }}

A guide_unlearn **forget patch** ({{ kind }}): applied to the {{ family }}
generator `{{ base }}` (base weights `{{ fingerprint }}`), it makes the generator stop rendering the identity of
{{ who }}, while other faces stay as they were. It was made with GUIDE (Seo et al., CVPR 2024) through the
`{{ preset }}` preset (recipe digest `{{ digest }}`). Final training losses: {{ losses }}.

## Apply it

```python
from guide_unlearn import IdentityEraser, ForgetPatch
eraser = IdentityEraser.from_pretrained({{ base_ref }})
eraser.apply_patch(ForgetPatch.from_pretrained({{ where }}{{ sub }}))
```

The patch refuses to apply to any generator whose weights differ from the base fingerprint above.

## Evidence

{{ audit }}

## What this card and this patch hold, and what they do not

They hold no photo, no rendering and no latent code of anyone, and no name: only the request ids the erasing
service chose (pseudonymous strings; a name appears only if the service put one in a request id). The files are
`forget_patch.json` (metadata), the safetensors tensors and, for LoRA patches, `adapter_config.json`.

## Limits

- The patch changes one base model only; copies of the person's photos or other models are not affected.
- Erasure is measured, not proven: a determined attacker with the base model can still render the person.
- {{ license_line }}
"""


# -- pulling ----------------------------------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The huggingface_hub cache folder, read from the environment at call time (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``)."""
    from guide_unlearn.checkpoints.resolve import hf_hub_cache

    return hf_hub_cache()


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to 1/true/yes/on now (read at call time, unlike huggingface_hub)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_repo_id(name: str) -> bool:
    """True for a hub model id ``owner/name`` (no scheme, no ``..``, no leading ``./`` or ``/``)."""
    return bool(_REPO_ID.match(str(name))) and ".." not in str(name) and not str(name).endswith(".git")


def is_hub_cache_link(path: Union[str, os.PathLike]) -> bool:
    """True when ``path`` is a symbolic link that huggingface_hub's cache made: it sits under
    ``<cache>/models--<owner>--<name>/snapshots/<revision>/`` and resolves to a regular file directly inside the
    same ``models--<owner>--<name>/blobs/`` folder. Every other link is not allowed (loaders refuse it)."""
    path = Path(path)
    if not path.is_symlink():
        return False
    parts = path.absolute().parts
    try:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
    except ValueError:
        return False
    if i < 1 or not parts[i - 1].startswith("models--") or i + 2 >= len(parts):
        return False
    repo = Path(*parts[:i])
    target = Path(os.path.realpath(path))
    blobs = Path(os.path.realpath(repo / "blobs"))
    return target.parent == blobs and target.is_file() and not (repo / "blobs").is_symlink()


def _check_subfolder(subfolder: Optional[str]) -> Optional[str]:
    if subfolder in (None, ""):
        return None
    sub = str(subfolder).replace("\\", "/").strip("/")
    if not sub or any(p in ("", ".", "..") for p in sub.split("/")) or os.path.isabs(str(subfolder)):
        raise PatchError(f"subfolder {subfolder!r} must be a relative path inside the repo or folder, without '..'")
    return sub


def resolve_patch_folder(name_or_path: Union[str, os.PathLike], revision: Optional[str] = None,
                         subfolder: Optional[str] = None, token: Union[None, bool, str] = None,
                         cache_dir: Union[None, str, os.PathLike] = None) -> Path:
    """The local folder of a patch given a folder path or a hub repo id ``"user/repo"``.

    A local path that exists always wins over a hub id of the same spelling. A repo id is fetched (naming it is
    the request to download it), only the patch's files of ``subfolder``; with ``HF_HUB_OFFLINE=1``, or when a
    pinned commit is already cached, nothing is fetched and the cached snapshot is used. Raises
    HubPatchNotFoundError saying where it looked and what to do.
    """
    from .patch import DELTA_FILE, LORA_CONFIG_FILE, LORA_FILE, META_FILE

    sub = _check_subfolder(subfolder)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if revision is not None:
            raise PatchError(f"{local} is a local folder; revision={revision!r} applies to hub repos only (drop it, "
                             "or move the folder away to load the hub repo of the same name)")
        return local / sub if sub else local
    name = str(name_or_path)
    if not looks_like_repo_id(name):
        raise HubPatchNotFoundError(
            f"no patch at {name!r}: looked for a local folder {local.absolute()} (not found), and it is not a hub "
            "repo id ('user/repo'). Pass the folder written by patch.save_pretrained() or a hub repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    prefix = f"{sub}/" if sub else ""
    patterns = [prefix + f for f in (META_FILE, LORA_CONFIG_FILE, LORA_FILE, DELTA_FILE, CARD_FILE)]
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    offline = hub_offline() or (revision is not None and _COMMIT.match(revision) is not None
                                and _cached_commit(cache, name, revision, prefix + META_FILE))
    if not offline:
        offline = not _check_remote_files(name, revision, sub, token)
    try:
        folder = snapshot_download(name, revision=revision, cache_dir=str(cache), allow_patterns=patterns,
                                   local_files_only=bool(offline), token=token, library_name="guide_unlearn")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        mode = ("HF_HUB_OFFLINE=1 is set, so only the cache was searched; unset it to download" if hub_offline()
                else "check the id and revision, run `hf auth login` for a private repo, or download it on a "
                     "machine with access and copy the cache")
        raise HubPatchNotFoundError(
            f"no patch at {name!r}: looked for a local folder {local.absolute()} (not found) and for hub repo "
            f"{name!r} (revision {revision or 'main'}) in the cache {cache} and on the hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. {mode}") from e
    path = Path(folder) / sub if sub else Path(folder)
    if sub and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder)):
        raise PatchError(f"{path} leads out of the cached snapshot {folder} through a linked folder; the "
                         "huggingface_hub cache never links folders — delete this snapshot and download it again")
    if not (path / META_FILE).exists():
        raise HubPatchNotFoundError(
            f"hub repo {name!r} (revision {revision or 'main'}) has no {prefix}{META_FILE}: it holds no forget patch "
            f"{'in that sub-folder' if sub else 'at its top level'}; pass subfolder=... naming the patch's folder")
    return path


def _cached_commit(cache: Path, repo_id: str, commit: str, meta_rel: str) -> bool:
    """True when the snapshot of ``commit`` (immutable) is already in the cache with the patch's metadata."""
    snap = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return (snap / meta_rel).exists()


def _check_remote_files(repo_id: str, revision: Optional[str], sub: Optional[str], token) -> bool:
    """Before downloading: list the patch's folder on the hub (one request) and refuse a pickle or an oversized
    JSON file there. -> False when the hub cannot be reached (the caller then uses the cache only, instead of
    huggingface_hub retrying the connection a second time), True otherwise."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .patch import MAX_JSON_BYTES

    try:
        from httpx2 import HTTPError as TransportError  # huggingface_hub >= 1.x
    except ImportError:  # pragma: no cover - older huggingface_hub on requests
        from requests import RequestException as TransportError

    try:
        entries = list(HfApi(token=token).list_repo_tree(repo_id, path_in_repo=sub or None, revision=revision))
    except HfHubHTTPError:
        return True  # not found / private / gated: snapshot_download reports it (after looking in the cache)
    except (TransportError, OSError):
        return False
    for e in entries:
        fname = e.path.rsplit("/", 1)[-1]
        size = getattr(e, "size", None)
        if fname.lower().endswith(_PICKLE_SUFFIXES):
            raise PatchError(f"hub repo {repo_id!r} holds a pickle file {e.path!r} beside the patch; forget patches "
                             "are safetensors-only and nothing was downloaded. Ask its owner to remove it")
        if fname.endswith(".json") and isinstance(size, int) and size > MAX_JSON_BYTES:
            raise PatchError(f"hub repo {repo_id!r}: {e.path} is {size} bytes, over the {MAX_JSON_BYTES}-byte "
                             "limit for patch JSON files; nothing was downloaded")
    return True


def patch_info(name_or_path: Union[str, os.PathLike], revision: Optional[str] = None,
               subfolder: Optional[str] = None) -> dict[str, Any]:
    """``guide-unlearn info``'s summary of a patch folder or hub repo: ForgetPatch.describe() plus where it was
    found and its card's ``guide_unlearn`` block (None for a folder without a card)."""
    from .patch import ForgetPatch

    folder = resolve_patch_folder(name_or_path, revision=revision, subfolder=subfolder)
    patch = ForgetPatch.from_pretrained(folder)
    return {"type": "forget_patch", "source": str(name_or_path), "folder": str(folder), **patch.describe(),
            "card": read_card_block(folder / CARD_FILE)}


# -- pushing ----------------------------------------------------------------------------------------------------
def push_patch(patch: "ForgetPatch", repo_id: str, private: bool = True, token: Union[None, bool, str] = None,
               commit_message: Optional[str] = None, revision: Optional[str] = None,
               subfolder: Optional[str] = None, license: Union[None, str, Mapping[str, Any]] = None,
               base_model: Optional[str] = None):
    """Upload a patch (its files and its model card) to ``repo_id`` in one commit. -> huggingface_hub CommitInfo.

    The repo is created if missing (private by default). ``subfolder`` puts the patch under that folder, so one
    repo can hold many patches for one base; ``revision`` names an existing branch to commit to.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not looks_like_repo_id(repo_id):
        raise PatchError(f"{repo_id!r} is not a hub repo id; use 'user/repo' (or 'org/repo')")
    sub = _check_subfolder(subfolder)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="guide_unlearn_push_") as tmp:
        folder = patch.save_pretrained(Path(tmp) / "patch", card={"license": license, "base_model": base_model,
                                                                   "repo_id": repo_id, "subfolder": sub})
        files = sorted(p for p in folder.iterdir() if p.is_file())
        # Bytes are read now: the temporary folder is gone when the commit is sent.
        ops = [CommitOperationAdd(path_in_repo=(f"{sub}/" if sub else "") + p.name, path_or_fileobj=p.read_bytes())
               for p in files]
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    target = getattr(repo, "repo_id", None) or repo_id
    message = commit_message or f"Add forget patch {patch.patch_id}" + (f" in {sub}/" if sub else "")
    return api.create_commit(target, ops, commit_message=message, revision=revision, repo_type="model")


def card_options(card: Union[None, bool, Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Normalise save_pretrained's ``card`` argument: False -> None (no card), True/None -> {}, a mapping -> it."""
    if card is False:
        return None
    if card is None or card is True:
        return {}
    if not isinstance(card, Mapping):
        raise PatchError("card must be True, False or a mapping of model_card() options (license, base_model)")
    return dict(card)
