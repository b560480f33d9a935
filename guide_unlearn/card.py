"""The model card of a forget patch: the ``README.md`` in a patch folder, whose YAML header holds the hub's usual
fields (``library_name``, ``tags``, ``license``, ``base_model``) and a ``guide_unlearn`` block (:data:`CARD_FORMAT`,
version :data:`CARD_VERSION`, specified in docs/patch_format.md): which base the patch is for, how it was made,
the request ids and, when the patch was audited, the audit summary. The card never holds a photo, a latent code
or a name, only what the caller put in a request id. Written by ``ForgetPatch.save_pretrained``, refreshed by the
audit, pushed with the patch by :mod:`guide_unlearn.hub`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from . import gate
from .config import PRESENTATION_FIELDS
from .errors import PatchError
from .hub_paths import looks_like_repo_id

CARD_FILE = "README.md"
CARD_FORMAT = "guide_unlearn.model_card"
CARD_VERSION = 1
TAGS = ("unlearning", "identity-unlearning", "guide")
# EraseConfig fields that change how a run behaves, never what it produces: left out of the recipe digest (one
# list for the whole library: the resume check and EraseConfig.digest() use the same).
RUNTIME_FIELDS = PRESENTATION_FIELDS
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


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
    link = out.get("license_link")
    if link and "://" not in link and license is None and license_file(metadata) is not None:
        out["license_link"] = LICENSE_FILE  # the base's licence text is copied into the patch folder
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
    preset = meta.get("method") or erase_config.get("method")  # the erase method that ran
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
    """The ``guide_unlearn`` block of a card file, or None without a card or a block. Read through the reading
    gate (a regular file inside its patch folder or a hub cache link into its repo's blobs, at most 1 MiB, UTF-8,
    YAML without aliases, every value checked by the card schema); a malformed card is a PatchError."""
    path = Path(card_path)
    if not (path.exists() or path.is_symlink()):
        return None
    data, _ = gate.read_card(path, root=path.parent)
    block = data.get("guide_unlearn")
    return dict(block) if isinstance(block, Mapping) else None


def refreshed_card(card_path: Union[str, os.PathLike], meta: Mapping[str, Any]):
    """The card of ``meta`` rebuilt for an existing card file, keeping the choices its author made when it was
    written (licence fields and a hub ``base_model``), so refreshing a card (e.g. after an audit) never drops a
    custom licence. Read like :func:`read_card_block`. -> :class:`huggingface_hub.ModelCard`."""
    path = Path(card_path)
    old, _ = gate.read_card(path, root=path.parent)
    lic = {k: old[k] for k in ("license", "license_name", "license_link") if isinstance(old.get(k), str)}
    base = old.get("base_model") if isinstance(old.get("base_model"), str) else None
    try:
        return model_card(meta, license=lic or None, base_model=base if base and looks_like_repo_id(base) else None)
    except PatchError:  # an old card's fields that are no longer valid: fall back to the defaults
        return model_card(meta)


LICENSE_FILE = "LICENSE"


def license_file(meta: Mapping[str, Any]) -> Optional[bytes]:
    """The text of the base model's licence when the patch records it as a file shipped with this library
    (``base_license.license_link`` a relative path inside the installed package, e.g. demo-faces' LICENSE): a patch
    folder carries it as ``LICENSE`` so that the card's ``license_link`` resolves in the patch's own folder (and on
    the hub). None otherwise."""
    lic = meta.get("base_license")
    link = lic.get("license_link") if isinstance(lic, Mapping) else None
    if not isinstance(link, str) or "://" in link or link.startswith("/") or ".." in link.split("/"):
        return None
    package = Path(__file__).resolve().parent
    candidate = package.parent / link
    if not candidate.is_file() or package not in candidate.resolve().parents:
        return None
    return gate.read_bytes(candidate, "text", root=package)


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


def card_options(card: Union[None, bool, Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Normalise save_pretrained's ``card`` argument: False -> None (no card), True/None -> {}, a mapping -> it."""
    if card is False:
        return None
    if card is None or card is True:
        return {}
    if not isinstance(card, Mapping):
        raise PatchError("card must be True, False or a mapping of model_card() options (license, base_model)")
    return dict(card)
