"""Attack ``code_book``: the default-inverter attack with the person's code-book entries dropped.

A GLO model's default inverter carries a code book (``adapters/projector/code_book.py``): every training photo's
code with its face descriptor. A photo of a known person starts its inversion from that person's own training
code. Erasing a person with a patch changes the generator's weights, NOT the book: the person's entry stays, and
the default inverter still starts every photo of the person from their code. This attack re-inverts the person's
photos through each model with a freshly loaded default inverter whose book lacks the person's entries — every
entry whose descriptor lies within the book's own same-person threshold of one of the person's photos
(``code_book_drop="person"``, the default), or the entries given by index — and reports the recognised rate beside
``reinversion_default_*`` (the same attack with the book as shipped). docs/audit.md says what a deletion should do
with the entry, and the privacy trade-off.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from guide_unlearn import metrics as M
from guide_unlearn.errors import ConfigError

from .attacks import DefaultInverterAttack
from .compared import AuditedModel, audited_models, judged, record_row, reference_of
from .families import AuditAttack, AuditContext, register_attack
from .photos import landmarks_of
from .stages import plural


@register_attack
class CodeBookAttack(AuditAttack):
    """``reinversion_default_without_entry_*``: the default-inverter attack without the person's book entries."""

    name = "code_book"
    title = "code-book attack"
    keys = ("code_book_person_entries", "reinversion_default_without_entry_recognised_before",
            "reinversion_default_without_entry_recognised_after",
            "reference_reinversion_default_without_entry_recognised",
            "reinversion_default_without_entry_recognised_minus_reference")
    meanings = {
        "code_book_person_entries": "entries dropped from the audited model's code book (the person's, by the "
                                    "book's own same-person rule, unless code_book_drop= lists them)",
        "reinversion_default_without_entry_recognised_before": "attack: the person's photos re-inverted through G_s "
                                                               "by the default inverter without those entries",
        "reinversion_default_without_entry_recognised_after": "the same through G_u",
        "reference_reinversion_default_without_entry_recognised": "the same through the reference (its own book, "
                                                                  "without entries matching the person)",
        "reinversion_default_without_entry_recognised_minus_reference": "after - reference"}
    options = {"code_book_drop": "the code-book entries to drop: 'person' (default: every entry within the book's "
                                 "threshold of one of the person's photos) or a list of entry indices"}
    figure_captions = {"code_book.png": "Default inverter without the person's code-book entries"}

    def prepare(self, eraser, options: dict[str, Any]) -> None:
        drop = options.get("code_book_drop", "person")
        if drop != "person" and (isinstance(drop, (str, bytes)) or not hasattr(drop, "__iter__")
                                 or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                            for i in drop)):
            raise ConfigError(f"code_book_drop must be 'person' or a list of entry indices, got {drop!r}")
        options["code_book_drop"] = drop if drop == "person" else [int(i) for i in drop]

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return plural(len(ctx.person), "photo")

    def run(self, ctx: AuditContext) -> None:
        if reference_of(ctx) is None:
            ctx.mark_not_run(self.keys[3:], "no reference model given (reference=)")
        with ctx.timed("code_book"):
            found: dict[str, float] = {}
            ctx.details["code_book"] = {"drop": ctx.options.get("code_book_drop", "person")}
            for model in audited_models(ctx):
                value = self._attack(ctx, model)
                if value is None and model.role != "reference":
                    ctx.mark_not_run(self.keys, "the model's default inverter uses no code book")
                    return
                if value is not None:
                    found[model.role] = value
        record_row(ctx, "reinversion_default_without_entry_recognised", found,
                   "attack: the default inverter without the person's code-book entries", "worse erasure")
        ctx.metrics["code_book_person_entries"] = float(len(ctx.details["code_book"]["before"]["dropped"]))

    def _attack(self, ctx: AuditContext, model: AuditedModel) -> Optional[float]:
        """The person's photos re-inverted through ``model`` by its default inverter without the entries.
        -> the recognised rate, or None when that inverter has no code book."""
        attacker = DefaultInverterAttack(model.eraser)
        book = getattr(attacker.inverter, "code_book", None)
        if book is None:
            ctx.details["code_book"][model.role] = {"book": None}
            return None
        person = ctx.person
        drop = ctx.options.get("code_book_drop", "person")
        entries = book.entries_near(torch.cat([p.crop for p in person]))
        dropped = entries if drop == "person" or model.role == "reference" else list(drop)
        ctx.details["code_book"][model.role] = {"book": len(book), "near_the_person": entries, "dropped": dropped}
        refs, groups = ctx.person_descriptors, [list(range(len(person)))] * len(person)
        done = None if dropped else self._reinverted(ctx, model)
        if done is not None:  # nothing to drop: the attack is the default re-inversion already rendered
            m, imgs = ctx.judge.match(done, landmarks_of(person), refs, groups), done
        else:
            attacker.inverter.code_book = book.without(dropped) if len(dropped) < len(book) else None
            attacker.progress = ctx.progress
            with model.active():
                codes = attacker.invert_photos(person, ctx.seed)
            m, imgs = judged(ctx, model, codes, person, refs, groups)
        ctx.details["code_book"][model.role]["rows"] = [
            {"photo": p.label, "score": s, "recognised": bool(r)} for p, s, r in zip(person, m.score, m.recognised)]
        ctx.gallery[f"code_book_{model.role}"] = imgs
        return M.fraction(m.recognised)

    @staticmethod
    def _reinverted(ctx: AuditContext, model: AuditedModel) -> Optional[torch.Tensor]:
        """The person's photos re-inverted through ``model`` by its default inverter with the whole book, when an
        earlier family rendered them (the same calls, so the same renderings), else None."""
        if model.role == "reference":
            return ctx.shared.get("reconstructions", {}).get(("reference", "default"))
        pair = ctx.gallery.get("attack_default")
        return None if pair is None else pair[0 if model.role == "before" else 1]

    def figures(self, report) -> dict[str, bytes]:
        from .compared import ROLE_NAMES
        from .figures import grid

        rows = [(f"{ROLE_NAMES[r]},\nbook without\nthe person", report.gallery[f"code_book_{r}"])
                for r in ("before", "after", "reference") if f"code_book_{r}" in report.gallery]
        if not rows:
            return {}
        return {"code_book.png": grid(rows, suptitle="the person's photos re-inverted by the default inverter with "
                                                     "the person's code-book entries dropped")}
