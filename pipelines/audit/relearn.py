"""Attack ``relearn``: pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images",
ACM TOG 2022). An attacker holding ONE photo of the person (the request photo) and the model inverts the photo
through the model with its freshly loaded default inverter (the pivot), then fine-tunes the generator's synthesis
weights for k steps so that the pivot renders the photo. Do the person's OTHER photos (held out) then render as the
person again at their codes — the codes the held-out figure renders (through G_s and G_u: their G_s inversions,
which anyone holding the public base model can make; through the reference: its own inverter's)? At k = 0 the curve
is the held-out figure; a patch that only hides the identity ("dormant" knowledge; "Erased or Dormant?", arXiv
2505.16174) revives in fewer steps than a model that never learnt the person (the reference) learns it.

Measured through the base, the patched model and the reference, each on its own deep copy (the audited eraser's
generator is never written), seeded, at the checkpoints of :data:`CHECKPOINTS` up to k: the recognised rate against
k is the report's curve (relearn.png).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from guide_unlearn import metrics as M
from guide_unlearn import patching
from guide_unlearn.errors import ConfigError
from guide_unlearn.protocols import module_of

from .attacks import DefaultInverterAttack
from .compared import ROLE_NAMES, AuditedModel, audited_models, own_codes, record_row, reference_of
from .families import AuditAttack, AuditContext, register_attack
from .photos import Photo, cameras_of, landmarks_of
from .stages import plural

DEFAULT_RELEARN_STEPS = 50  # k: fine-tuning steps of the attack (relearn_steps=, --relearn-steps)
MAX_RELEARN_STEPS = 1000  # the bound on k: each step is a forward and backward pass of the generator
RELEARN_LR = 3e-4  # Adam learning rate on the generator weights: pivotal tuning's (Roich et al. 2022)
MAX_RELEARN_LR = 0.1  # beyond this Adam steps destroy the generator rather than tune it
CHECKPOINTS = (0, 5, 10, 25, 50, 100, 200, 500, 1000)  # k at which the held-out photos are rendered and judged


def tuned_copy(model: AuditedModel) -> torch.nn.Module:
    """A deep copy of ``model``'s generator as it renders (the audited patch, and any patch the eraser had
    applied, merged into the copy's weights): the attack fine-tunes this, never the eraser's generator."""
    twin = copy.deepcopy(module_of(model.eraser.generator))
    if model.patch is not None:
        patching.apply(twin, model.patch)
    if patching.applied(twin):
        patching.merge(twin)
    return twin


def tunable_parameters(generator: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters pivotal tuning changes: every floating parameter outside the mapping network (a fixed pivot
    code does not go through the mapping)."""
    return [p for n, p in generator.named_parameters() if "mapping" not in n.split(".") and p.is_floating_point()]


def _render(generator, ws: torch.Tensor, cameras, seed: int) -> torch.Tensor:
    """ws [N, num_ws, w_dim] -> images [N, 3, H, W] on the CPU (noise 'const', any randomness from ``seed``)."""
    from guide_unlearn.pipelines.photos import synthesize

    device = generator.w_avg.device
    out = []
    for i in range(0, ws.shape[0], 32):
        cams = None if cameras is None else cameras[i:i + 32].to(device)
        out.append(synthesize(generator, ws[i:i + 32].to(device), seed, cams).detach().cpu())
    return torch.cat(out)


def pivotal_tuning(generator: torch.nn.Module, pivot: torch.Tensor, photo: torch.Tensor, camera, perceptual,
                   steps: int, probe: torch.Tensor, probe_cameras, seed: int = 0, lr: float = RELEARN_LR,
                   checkpoints: Sequence[int] = ()) -> dict[int, torch.Tensor]:
    """Fine-tune ``generator`` IN PLACE (pass a copy) for ``steps`` Adam steps on perceptual(G(pivot), photo) +
    pixel MSE, the pivot code fixed. pivot [1, num_ws, w_dim], photo [1, 3, H, W] in [-1, 1] (+ camera [1, c_dim]
    or None); probe [P, num_ws, w_dim] (+ probe_cameras [P, c_dim]) are rendered at each k in ``checkpoints``.
    -> {k: renderings [1 + P, 3, H, W] (the pivot first) on the CPU}."""
    params = tunable_parameters(generator)
    module_of(generator).requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    device = generator.w_avg.device
    pivot, photo = pivot.to(device), photo.to(device)
    cam = None if camera is None else camera.to(device)
    codes = torch.cat([pivot.cpu(), probe.cpu()])
    cams = None if probe_cameras is None else torch.cat([camera.cpu(), probe_cameras.cpu()])
    opt = torch.optim.Adam(params, lr=lr)
    out: dict[int, torch.Tensor] = {}
    for step in range(steps + 1):
        if step in checkpoints or step == steps:
            with torch.no_grad():
                out[step] = _render(generator, codes, cams, seed)
        if step == steps:
            break
        rng = torch.Generator(device=device).manual_seed(seed)
        img = generator.synthesis(pivot, cam, noise_mode="const", generator=rng).images
        loss = (perceptual(img, photo) + (img - photo).square().flatten(1).mean(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    module_of(generator).requires_grad_(False)
    return out


@register_attack
class Relearning(AuditAttack):
    """``relearn_*``: held-out photos recognised after k steps of pivotal tuning on the request photo."""

    name = "relearn"
    title = "relearn attack"
    keys = ("relearn_recognised_before", "relearn_recognised_after", "reference_relearn_recognised",
            "relearn_recognised_minus_reference")
    meanings = {
        "relearn_recognised_before": "attack: held-out photos recognised after k steps of pivotal tuning of G_s "
                                     "on the request photo",
        "relearn_recognised_after": "the same attack on G_u (lower = the erasure does not revive)",
        "reference_relearn_recognised": "the same attack on the reference model",
        "relearn_recognised_minus_reference": "relearn_recognised_after - reference (<= 0.10: revives no faster "
                                              "than a model that never learnt the person learns it)"}
    options = {"relearn_steps": f"k, the pivotal-tuning steps of the relearn attack (default "
                                f"{DEFAULT_RELEARN_STEPS}, at most {MAX_RELEARN_STEPS})",
               "relearn_lr": f"Adam learning rate of the tuning (default {RELEARN_LR:g}, pivotal tuning's; in "
                             f"(0, {MAX_RELEARN_LR:g}])"}
    figure_captions = {"relearn.png": "Re-learning attack (pivotal tuning)",
                       "relearn_images.png": "Re-learning attack: held-out photos before and after tuning"}

    def prepare(self, eraser, options: dict[str, Any]) -> None:
        k = options.get("relearn_steps", DEFAULT_RELEARN_STEPS)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_RELEARN_STEPS:
            raise ConfigError(f"relearn_steps must be a whole number of steps in [1, {MAX_RELEARN_STEPS}], got "
                              f"{k!r}")
        options["relearn_steps"] = int(k)
        lr = options.get("relearn_lr", RELEARN_LR)
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not 0 < lr <= MAX_RELEARN_LR:
            raise ConfigError(f"relearn_lr must be a learning rate in (0, {MAX_RELEARN_LR:g}], got {lr!r}")
        options["relearn_lr"] = float(lr)

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        steps = ctx.options.get("relearn_steps", DEFAULT_RELEARN_STEPS)
        return f"{plural(int(steps), 'pivotal-tuning step')} on {plural(len(ctx.held_out), 'held-out photo')}"

    def run(self, ctx: AuditContext) -> None:
        if not len(ctx.held_out):
            ctx.mark_not_run(self.keys, "the relearn attack needs held-out photos (none given, or none had a face)")
            return
        if reference_of(ctx) is None:
            ctx.mark_not_run(self.keys[2:], "no reference model given (reference=)")
        steps = ctx.options.get("relearn_steps", DEFAULT_RELEARN_STEPS)
        ks = sorted({k for k in CHECKPOINTS if k <= steps} | {steps})
        lr = ctx.options.get("relearn_lr", RELEARN_LR)
        curves: dict[str, Any] = {"steps": ks, "k": steps, "lr": lr, "pivot": ctx.request.photos[0].label,
                                  "perceptual": getattr(ctx.eraser.perceptual, "name", type(ctx.eraser.perceptual)
                                                        .__name__)}
        with ctx.timed("relearn"):
            for model in audited_models(ctx):
                curves[model.role] = self._attack(ctx, model, steps, ks, lr)
        final = {role: curves[role]["recognised"][-1] for role in ("before", "after", "reference") if role in curves}
        record_row(ctx, "relearn_recognised", final, f"attack: held-out photos recognised after k = {steps} "
                                                     "pivotal-tuning steps", "worse erasure")
        ctx.details["relearn"] = {k: ({n: x for n, x in v.items() if n != "images"} if k in ROLE_NAMES else v)
                                  for k, v in curves.items()}
        ctx.gallery["relearn"] = {"curves": curves, "photos": ctx.held_out.crops}

    def _attack(self, ctx: AuditContext, model: AuditedModel, steps: int, ks: list[int], lr: float
                ) -> dict[str, Any]:
        """One model: the pivot through it, the held-out photos' codes, then the tuning of its copy. -> the curve."""
        pivot, held = ctx.request.photos[0], ctx.held_out.photos
        attacker = DefaultInverterAttack(model.eraser)
        attacker.progress = ctx.progress
        with model.active():
            w_pivot = attacker.invert_photos([pivot], ctx.seed)
        if model.role == "reference":
            w_held = ctx.shared.get("reference_held_out_codes")
            w_held = own_codes(ctx, model, held) if w_held is None else w_held
        else:
            w_held = ctx.codes["held_out"]
        twin = tuned_copy(model)
        shots = pivotal_tuning(twin, w_pivot, pivot.crop, cameras_of([pivot]), model.eraser.perceptual, steps,
                               w_held, cameras_of(held), seed=ctx.seed, lr=lr, checkpoints=ks)
        del twin
        return self._judge(ctx, shots, pivot, held, ks)

    @staticmethod
    def _judge(ctx: AuditContext, shots: dict[int, torch.Tensor], pivot: Photo, held: list[Photo], ks: list[int]
               ) -> dict[str, Any]:
        person = ctx.person
        recognised, similarity, pivot_cos = [], [], []
        for k in ks:
            m = ctx.judge.match(shots[k][1:], landmarks_of(held), ctx.person_descriptors,
                                [list(range(len(person)))] * len(held))
            recognised.append(M.fraction(m.recognised))
            similarity.append(float(np.nanmean(m.cosine)) if np.isfinite(m.cosine).any() else float("nan"))
            p = ctx.judge.match(shots[k][:1], landmarks_of([pivot]), pivot.descriptor[None], check_faces=False)
            pivot_cos.append(float(p.cosine[0]))
        return {"recognised": recognised, "held_out_similarity": similarity, "pivot_similarity": pivot_cos,
                "images": {ks[0]: shots[ks[0]][1:], ks[-1]: shots[ks[-1]][1:]}}

    def figures(self, report) -> dict[str, bytes]:
        from .figures import grid, png, pyplot

        g = report.gallery.get("relearn")
        if not g:
            return {}
        curves, plt = g["curves"], pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        styles = {"before": ("tab:blue", "--"), "after": ("tab:red", "-"), "reference": ("tab:green", "-")}
        for role, (color, ls) in styles.items():
            if role in curves:
                ax.plot(curves["steps"], curves[role]["recognised"], color=color, ls=ls, marker="o",
                        label=ROLE_NAMES[role])
        ax.set_xlabel("pivotal-tuning steps k (one photo of the person)")
        ax.set_ylabel("held-out photos recognised")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
        ax.set_title(f"re-learning attack: recognised rate against k ({report.protocol['identity']})", fontsize=9)
        fig.tight_layout()
        figs = {"relearn.png": png(fig)}
        rows = [("held-out photo", g["photos"])]
        for role in ("after", "reference"):
            if role in curves:
                for k, imgs in curves[role]["images"].items():
                    rows.append((f"{ROLE_NAMES[role]}\nk = {k}", imgs))
        figs["relearn_images.png"] = grid(rows, suptitle="held-out photos rendered at their codes before (k = 0) "
                                                         "and after tuning on the request photo")
        return figs
