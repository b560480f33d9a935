"""Family ``membership`` (runs with ``strangers=``): is the person reconstructed better than people the model never
saw? A per-identity membership test (in the spirit of Hayes et al., SaTML 2025): the strangers' photos are the
baseline of what an inversion attack achieves on anybody.

For a model M and an attacker A (the fresh default inverter, the from-scratch projector), each photo p of the
person and each stranger's photo s is inverted through M by A and rendered there; its fidelity is the identity
cosine between the rendering and the photo itself (the judge's vectors; one reference each, so the person and the
strangers are scored alike). Then

    membership(M, A) = mean fidelity over the person's photos - mean fidelity over the strangers' photos

(cosine units; 0: the person is reconstructed no better than a stranger, > 0: better, i.e. the model still holds
something of them). ``details["membership"]`` adds the percentile (the share of strangers reconstructed less
faithfully than the person's mean) and a seeded bootstrap of the score over photos (its standard deviation: the
spread a verdict allows).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from guide_unlearn import metrics as M

from .attacks import DefaultInverterAttack, InversionAttack, ScratchProjectorAttack
from .compared import ROLE_NAMES, AuditedModel, audited_models, record_row, reference_of
from .families import AuditContext, MetricFamily, register_metric_family
from .photos import Photo, cameras_of, landmarks_of, photo_items, prepare_photos
from .rendering import render
from .stages import plural

ATTACKERS = ("default", "scratch")
BOOTSTRAP = 200  # resamples of the membership score's bootstrap


def fidelity(ctx: AuditContext, images: torch.Tensor, photos: list[Photo]) -> np.ndarray:
    """Identity cosine [N] of each rendering [N, 3, H, W] with its own photo (NaN: no face / no vector)."""
    desc = ctx.judge.describe(images, landmarks_of(photos))
    refs = np.stack([p.descriptor for p in photos])
    return M.best_match(desc, refs, [[i] for i in range(len(photos))], "cosine")


def membership_score(person: np.ndarray, strangers: np.ndarray, seed: int, resamples: int = BOOTSTRAP
                     ) -> dict[str, Any]:
    """person [P], strangers [S] fidelities (NaN entries ignored) -> {"score": mean(person) - mean(strangers),
    "percentile": share of strangers below the person's mean, "std": bootstrap standard deviation of the score
    (photos resampled with replacement, ``seed``), "person", "strangers"}."""
    p, s = person[np.isfinite(person)], strangers[np.isfinite(strangers)]
    out: dict[str, Any] = {"person": person.tolist(), "strangers": strangers.tolist(), "score": float("nan"),
                           "percentile": float("nan"), "std": float("nan")}
    if not len(p) or not len(s):
        return out
    rng = np.random.default_rng(seed)
    boot = [rng.choice(p, len(p)).mean() - rng.choice(s, len(s)).mean() for _ in range(resamples)]
    out.update(score=float(p.mean() - s.mean()), percentile=float((s < p.mean()).mean()), std=float(np.std(boot)))
    return out


@register_metric_family
class MembershipFamily(MetricFamily):
    """``membership_*``: how much better the person is reconstructed than strangers are, through each model."""

    name = "membership"
    title = "membership against strangers"
    keys = tuple(k for tag in ATTACKERS for k in (f"membership_{tag}_before", f"membership_{tag}_after",
                                                  f"reference_membership_{tag}", f"membership_{tag}_minus_reference"))
    meanings = {**{f"membership_{t}_before": f"membership score through G_s ({t} attacker): the person's mean "
                                             "reconstruction cosine minus the strangers'" for t in ATTACKERS},
                **{f"membership_{t}_after": f"the same through G_u ({t}; about 0 or below: no trace of the person)"
                   for t in ATTACKERS},
                **{f"reference_membership_{t}": f"the same through the reference ({t})" for t in ATTACKERS},
                **{f"membership_{t}_minus_reference": "after - reference" for t in ATTACKERS}}
    options = {"strangers": "photos of people the base model never saw (a folder, paths or PIL images; one person "
                            "per file, or per sub-folder): the baseline of the membership score"}
    photo_options = ("strangers",)
    figure_captions = {"membership.png": "Membership: the person against strangers"}

    def runs(self, attacks, options) -> bool:
        return options.get("strangers") is not None

    def prepare(self, eraser, options: dict[str, Any]) -> None:
        photo_items(options["strangers"], "strangers")  # InputError now for a missing or empty folder

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return plural(len(photo_items(ctx.options["strangers"], "strangers")), "stranger photo")

    def run(self, ctx: AuditContext) -> None:
        strangers = prepare_photos(photo_items(ctx.options["strangers"], "strangers"), "strangers", ctx.judge,
                                   ctx.eraser, ctx.skipped)
        ctx.details["membership"] = {"strangers": len(strangers)}
        if len(strangers) < 2:
            ctx.mark_not_run(self.keys, "fewer than 2 usable stranger photos")
            return
        if reference_of(ctx) is None:
            ctx.mark_not_run([k for k in self.keys if "reference" in k], "no reference model given (reference=)")
        results: dict[str, Any] = {"strangers": len(strangers), "bootstrap": BOOTSTRAP}
        with ctx.timed("membership"):
            for model in audited_models(ctx):
                attackers = self._attackers(ctx, model)
                for tag in ATTACKERS:
                    results.setdefault(tag, {})[model.role] = self._score(ctx, model, attackers[tag], tag,
                                                                          strangers.photos)
        for tag in ATTACKERS:
            values = {role: r["score"] for role, r in results[tag].items()}
            record_row(ctx, f"membership_{tag}", values, f"membership score ({tag} attacker, strangers as the "
                                                         "baseline)", "worse erasure")
        ctx.details["membership"] = results
        ctx.gallery["membership"] = results

    @staticmethod
    def _attackers(ctx: AuditContext, model: AuditedModel) -> dict[str, InversionAttack]:
        attackers = {"default": DefaultInverterAttack(model.eraser),
                     "scratch": ScratchProjectorAttack(model.eraser, steps=ctx.settings.projector_steps,
                                                       progress=ctx.progress)}
        for a in attackers.values():
            a.progress = ctx.progress
        return attackers

    def _score(self, ctx: AuditContext, model: AuditedModel, attacker: InversionAttack, tag: str,
               strangers: list[Photo]) -> dict[str, Any]:
        person = ctx.person
        with model.active():
            mine = self._reconstructed(ctx, model, tag)
            if mine is None:
                mine = render(model.eraser, attacker.invert_photos(person, ctx.seed), cameras_of(person))
            theirs = render(model.eraser, attacker.invert_photos(strangers, ctx.seed), cameras_of(strangers))
        return membership_score(fidelity(ctx, mine, person), fidelity(ctx, theirs, strangers), ctx.seed)

    @staticmethod
    def _reconstructed(ctx: AuditContext, model: AuditedModel, tag: str) -> Optional[torch.Tensor]:
        """The person's reconstructions by ``tag`` through ``model`` that an earlier family already rendered (the
        reinvert attack for G_s / G_u, the reference family for the reference), or None."""
        if model.role == "reference":
            return ctx.shared.get("reconstructions", {}).get(("reference", tag))
        pair = ctx.gallery.get(f"attack_{tag}")
        return None if pair is None else pair[0 if model.role == "before" else 1]

    def figures(self, report) -> dict[str, bytes]:
        from .figures import png, pyplot

        res = report.gallery.get("membership")
        if not res:
            return {}
        plt = pyplot()
        fig, axes = plt.subplots(1, len(ATTACKERS), figsize=(4 * len(ATTACKERS), 3.4), sharey=True)
        rng = np.random.default_rng(0)
        for ax, tag in zip(np.atleast_1d(axes), ATTACKERS):
            for x, (role, r) in enumerate(res[tag].items()):
                s, p = np.asarray(r["strangers"], float), np.asarray(r["person"], float)
                ax.scatter(x + rng.uniform(-0.12, 0.12, len(s)), s, s=12, color="0.6",
                           label="strangers" if x == 0 else None)
                ax.scatter(np.full(len(p), x + 0.25), p, s=22, color="tab:red", marker="D",
                           label="the person" if x == 0 else None)
                ax.text(x, 1.02, f"{r['score']:+.3f}" if np.isfinite(r["score"]) else "n/a", ha="center",
                        fontsize=8, transform=ax.get_xaxis_transform())
            ax.set_xticks(range(len(res[tag])), [ROLE_NAMES[r] for r in res[tag]], fontsize=7)
            ax.set_title(f"{tag} attacker (membership score above each model)", fontsize=8, pad=14)
        np.atleast_1d(axes)[0].set_ylabel(f"reconstruction cosine to the photo ({report.protocol['identity']})")
        np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        return {"membership.png": png(fig)}
