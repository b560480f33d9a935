"""``guide-unlearn push``: upload a forget patch folder (with its model card) to a Hugging Face Hub repo."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("push", help="upload a patch folder and its model card to a hub repo",
                       description="Upload a forget patch folder to the Hugging Face Hub repo REPO_ID in one commit "
                                   "(the repo is created, private, if missing). The token comes from `hf auth "
                                   "login` or $HF_TOKEN. The card holds no photo, code or name: only the patch's "
                                   "metadata and request ids.")
    p.add_argument("patch", help="patch folder written by erase / save_pretrained")
    p.add_argument("repo_id", help="hub repo id, 'user/repo'")
    p.add_argument("--subfolder", default=None, help="put the patch in this folder of the repo (many patches for "
                                                     "one base in one repo)")
    p.add_argument("--revision", default=None, help="existing branch to commit to (default: main)")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--license", default=None, help="licence id for the card (default: the base model's licence "
                                                   "recorded in the patch)")
    p.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    from guide_unlearn.patch import ForgetPatch

    patch = ForgetPatch.from_pretrained(args.patch)
    info = patch.push_to_hub(args.repo_id, private=not args.public, commit_message=args.message,
                             revision=args.revision, subfolder=args.subfolder, license=args.license)
    print(json.dumps({"repo_id": args.repo_id, "subfolder": args.subfolder, "patch_id": patch.patch_id,
                      "commit": getattr(info, "oid", None), "url": str(getattr(info, "commit_url", ""))}))
    return 0
