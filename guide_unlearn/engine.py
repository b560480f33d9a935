"""The one erase loop: a registered method's rows and terms, LTU losses, a LoRA (or full) update of the generator,
run through accelerate.

:func:`run_erase` owns everything a run shares: accelerate and mixed precision, the optimiser, resume
(``RunOptions.state_dir`` / ``checkpoint_every``, the method's state included), the progress bar, trackers,
finite-loss checks, the loss history, patch extraction and its metadata. A method (:mod:`guide_unlearn.methods`)
contributes its rows, extra loss terms, phases, metadata and resumable state, and never loops itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from . import lora as L
from .config import EraseConfig, RunOptions
from .errors import ConfigError, LatentError, TrainingDivergedError
from .fingerprint import patch_state, trained_on
from .frozen import cached_constants
from .latents import check_latents
from .losses import LTULoss, ltu_loss
from .methods import EraseMethod, Erasure, LoraSettings, LossTerm, RunContext, StepRows, check_supported, get_method
from .outputs import EraseRun
from .patch import ForgetPatch
from .protocols import GeneratorAdapter, IdentityModel, PerceptualDistance, PersonJudge, SynthesisOutput, module_of
from .resume import STATE_FILE, check_state_file, load_state, save_state
from .targets import resolve_distances

logger = logging.getLogger(__name__)
TRAIN_ADAPTER = "erasing"
HISTORY_POINTS = 200  # at most this many loss-history points are stored in a patch (metadata "loss_history")


def run_erase(
    generator: GeneratorAdapter,
    w_u: torch.Tensor,
    cfg: EraseConfig,
    perceptual: PerceptualDistance,
    identity: Optional[IdentityModel] = None,
    *,
    person_of: Optional[torch.Tensor] = None,
    person_ids: Optional[Sequence[str]] = None,
    keep: Optional[torch.Tensor] = None,
    services: Any = None,
    run: Optional[RunOptions] = None,
    extra_metadata: Optional[dict[str, Any]] = None,
    judge: Optional[PersonJudge] = None,
) -> EraseRun:
    """Erase the people whose codes are ``w_u`` [K, num_ws, w_dim] from ``generator`` with ``cfg.method``.

    All K codes show ONE person unless ``person_of`` [K] (long, 0..P-1) says which of P people each code shows (a
    method that erases several people, e.g. ``joint``); ``person_ids`` (P strings, e.g. request ids) label the
    per-person figures in the patch metadata. ``keep`` [M, num_ws, w_dim]: codes of people erased by patches
    applied before this run, kept erased by methods that can (continual requests). ``services``: what the method
    declared it needs from outside the core (``EraseMethod.services``, e.g. ``RobustServices``). A request the
    method cannot do is refused before any work.

    ``run`` (:class:`RunOptions`) says how the run behaves; only ``cfg`` decides the patch. With a state folder and
    ``checkpoint_every > 0`` the run saves resumable state there and resumes from it if present; the state holds
    the people's codes, so it is deleted when the run succeeds. The generator is left exactly as it was (the new
    patch is returned, not applied; ``extra_metadata`` is added to its metadata; no code or target is stored).

    ``judge`` (:class:`~guide_unlearn.protocols.PersonJudge`, bound by a pipeline to the request's rows): every
    method's targets must be someone other than their person for it; a recognised target is moved before training
    (:meth:`EraseMethod.checked`, recorded under ``"target_identity"``), TargetError when none is found.
    -> :class:`~guide_unlearn.outputs.EraseRun`.
    """
    run = run if run is not None else RunOptions()
    if not isinstance(run, RunOptions):
        raise ConfigError(f"run must be a RunOptions, got {type(run).__name__}")
    check_state_file(run.state_dir)  # a link, FIFO or device in the state's place is refused before any work
    method_class = get_method(cfg.method).method_class
    erasure = _erasure(generator, w_u, person_of, person_ids, keep)
    check_supported(cfg.method, erasure.people, erasure.keep is not None)
    check_identity(cfg, identity)
    method_class.check(cfg, services, identity)
    distance, alpha = resolve_distances(cfg, generator)
    rng = torch.Generator(device=generator.w_avg.device).manual_seed(cfg.seed)
    ctx = RunContext(generator, cfg, perceptual, identity, rng, distance, alpha, erasure, services, judge)
    method = method_class(ctx)
    method.setup()  # before the patch exists: the generator renders G_s
    if judge is not None and ctx.target_record is None:
        raise ConfigError(f"method {cfg.method!r} did not check its targets with the identity judge (every method "
                          "calls EraseMethod.checked in setup); nothing was trained")
    base = patch_state(module_of(generator))["base_fingerprint"]
    trainable = _Trainable(generator, method_class.trains, cfg.method_config, rng)
    scope = contextlib.ExitStack()
    try:
        if method_class.trains == "lora":  # only the LoRA trains: every base weight stays as it is until the end
            scope.enter_context(cached_constants())
        loop = _Loop(ctx, method, trainable, run)
        history, seconds = loop.train()
        final = history[-1] if history else {}
        metadata = patch_metadata(generator, cfg, base, distance, alpha, final, perceptual, identity,
                                  int(erasure.codes.shape[0]), history)
        metadata.update(method.metadata(final))
        if ctx.target_record is not None:
            metadata["target_identity"] = ctx.target_record  # numbers only: the targets' scores, never a code
        metadata.update(extra_metadata or {})
        patch = trainable.extract(metadata)
    finally:
        scope.close()
        trainable.restore()
    if loop.state_path is not None and loop.state_path.exists():
        loop.state_path.unlink()  # holds the people's codes: never keep it after success
    return EraseRun(patch=patch, w_target=method.targets(), history=history, seconds=seconds, run=run)


def check_identity(cfg: EraseConfig, identity: Optional[IdentityModel]) -> None:
    """ConfigError when the recipe asks for an identity term that needs a model and none is given (the loss would
    silently drop it)."""
    if cfg.global_id_weight > 0 and identity is None:
        raise ConfigError("global_id_weight > 0 needs an identity model; pass identity_model= to the eraser (e.g. "
                          "load_identity_model('faceapi')) or set global_id_weight=0")


def _erasure(generator: GeneratorAdapter, w_u: Any, person_of: Optional[torch.Tensor],
             person_ids: Optional[Sequence[str]], keep: Optional[torch.Tensor]) -> Erasure:
    """Check who is erased: codes [K, num_ws, w_dim], ``person_of`` [K] person indices >= 0 using every index
    0..P-1 (default: all one person), one id per person, kept codes [M, num_ws, w_dim]. -> :class:`Erasure`."""
    w_u = check_latents(w_u, generator)
    k, device = w_u.shape[0], w_u.device
    person_of = torch.zeros(k, dtype=torch.long) if person_of is None else torch.as_tensor(person_of)
    if person_of.shape != (k,) or person_of.dtype not in (torch.int32, torch.int64) or int(person_of.min()) < 0:
        raise LatentError(f"person_of must be [K={k}] person indices >= 0, got {list(person_of.shape)} "
                          f"{person_of.dtype}")
    people = int(person_of.max()) + 1
    if set(person_of.tolist()) != set(range(people)):
        raise LatentError("person_of must use every person index 0..P-1 at least once")
    if person_ids is not None and len(person_ids) != people:
        raise LatentError(f"{len(person_ids)} person ids for {people} people; give one id per person")
    keep = check_latents(keep, generator) if keep is not None else None
    return Erasure(w_u, person_of.to(device=device, dtype=torch.long), people,
                   None if person_ids is None else list(person_ids), keep)


class _Loop:
    """One run's training: the phases of the method, each step's batch and loss, the update, logging, progress,
    trackers and checkpoints (a class so that each part stays short)."""

    def __init__(self, ctx: RunContext, method: EraseMethod, trainable: "_Trainable", run: RunOptions):
        self.ctx, self.method, self.trainable, self.run = ctx, method, trainable, run
        self.phases = [int(n) for n in method.phases()]
        if not self.phases or any(n < 0 for n in self.phases):
            raise ConfigError(f"method {ctx.cfg.method!r} declared invalid phases {self.phases}")
        self.starts = [sum(self.phases[:i]) for i in range(len(self.phases))]
        self.total = sum(self.phases)
        self.state_path = Path(run.state_dir) / STATE_FILE if run.state_dir is not None else None
        self.history: list[dict[str, float]] = []

    def train(self) -> tuple[list[dict[str, float]], float]:
        """Run every step (from a saved state when there is one). -> (history, seconds of the loop)."""
        ctx, run = self.ctx, self.run
        self.accelerator = _accelerator(ctx.cfg, ctx.device, run.trackers,
                                        str(run.state_dir) if run.state_dir else None)
        optimizer = torch.optim.Adam(self.trainable.params, lr=ctx.cfg.lr, betas=ctx.cfg.adam_betas)
        self.optimizer = self.accelerator.prepare(optimizer)
        self.method.start(dict(zip(self.trainable.names, self.trainable.params)), self.trainable.source)
        if run.trackers:
            self.accelerator.init_trackers("guide_unlearn", config={k: str(v) for k, v in
                                                                    ctx.cfg.recipe_dict().items()})
        start = 0
        if check_state_file(run.state_dir) is not None:
            start, self.history = load_state(self.state_path, self.trainable, self.optimizer, ctx.rng, ctx.cfg,
                                             _state_codes(ctx.erasure), self.method)
            logger.info("resumed erase from %s at step %d", self.state_path, start)
        t0 = time.perf_counter()
        bar = _progress(self.total, run, start)
        for step in range(start, self.total):
            phase = max(i for i, s in enumerate(self.starts) if s <= step)
            if phase > 0 and step == self.starts[phase]:
                self.method.begin_phase(phase)  # the training adapter is active: the generator renders G_u
            if self._step(step, phase, bar):
                break
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        if run.trackers:
            self.accelerator.end_training()
        return self.history, seconds

    def _step(self, step: int, phase: int, bar: Any) -> bool:
        """One step: rows, loss, update, log, checkpoint. -> True when the method ended the run here."""
        rows, loss = self._loss(step)
        entry = {"step": float(step), **({"round": float(phase)} if len(self.phases) > 1 else {}), **loss.parts}
        if self.method.observe(step, rows, loss):
            self.history.append(entry)
            return True
        if not math.isfinite(loss.parts["loss"]):  # already on the host: no extra device sync
            raise TrainingDivergedError(f"the loss became {loss.parts['loss']} at step {step}; lower lr (now "
                                        f"{self.ctx.cfg.lr}) or use mixed_precision='no'")
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss.total)
        self.optimizer.step()
        if step % self.run.log_every == 0 or step == self.total - 1:
            self.history.append(entry)
            if self.run.trackers:
                self.accelerator.log(loss.parts, step=step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in loss.parts.items() if k in ("loss", "local", "adjacency",
                                                                                  "global")})
        every = self.run.checkpoint_every
        if self.state_path is not None and every and (step + 1) % every == 0 and step + 1 < self.total:
            save_state(self.state_path, step + 1, self.history, self.trainable, self.optimizer, self.ctx.rng,
                       self.ctx.cfg, _state_codes(self.ctx.erasure), self.method.state_dict())
        return False

    def _loss(self, step: int) -> tuple[StepRows, LTULoss]:
        """The step's batch — rows [k local | n_adj adjacency | extra | n_glob global], one camera for all —
        rendered through G_s and G_u in one batch each, and its loss (LTU terms plus the method's)."""
        ctx, method = self.ctx, self.method
        g, cfg, rng, device = ctx.generator, ctx.cfg, ctx.rng, ctx.device
        method.before_step(step)
        n_adj, n_glob = cfg.adjacency_samples, cfg.global_samples
        cam = g.sample_cameras(1, rng)
        z = torch.randn(n_adj + n_glob, g.z_dim, generator=rng, device=device)
        with torch.no_grad():
            w_r = g.mapping(z, None, truncation_psi=cfg.truncation_psi) if n_adj + n_glob else None
        rows = method.rows(step)
        lo, hi = ctx.alpha
        alpha = torch.rand(n_adj, generator=rng, device=device) * (hi - lo) + lo
        method.extra_rows(step, rows)
        ws_u, ws_s = step_codes(rows.w_u, rows.w_t, w_r, rows.adjacency_idx, alpha, n_adj)
        if rows.extra:
            cut = rows.k + n_adj
            ws_u = torch.cat([ws_u[:cut], rows.extra_u, ws_u[cut:]])
            ws_s = torch.cat([ws_s[:cut], rows.extra_t, ws_s[cut:]])
        step_cfg = rows.cfg if rows.cfg is not None else cfg
        with self.accelerator.autocast():
            out_u, out_s = render_step(g, self.trainable.source, ws_u, ws_s, cam, step_cfg, rng)
            loss = ltu_loss(out_u, out_s, rows.k, n_adj + rows.extra, n_glob, step_cfg, ctx.perceptual,
                            ctx.identity, rows.local_weights)
            loss = _with_terms(loss, method.extra_loss(step, rows, out_u, out_s))
        return rows, loss


def _with_terms(loss: LTULoss, terms: list[LossTerm]) -> LTULoss:
    """The LTU loss plus a method's extra terms (each logged under its name, the total under 'loss')."""
    if not terms:
        return loss
    total, parts = loss.total, dict(loss.parts)
    for term in terms:
        total = total + term.weight * term.value
        parts[term.name] = float(term.value.detach())
    parts["loss"] = float(total.detach())
    return LTULoss(total, parts, loss.local_rows)


def _state_codes(erasure: Erasure) -> torch.Tensor:
    """The codes a saved state must belong to: the erased codes, then the kept ones."""
    return erasure.codes if erasure.keep is None else torch.cat([erasure.codes, erasure.keep])


def step_codes(w_u: torch.Tensor, w_t: torch.Tensor, w_r: Optional[torch.Tensor], idx: torch.Tensor,
               alpha: torch.Tensor, n_adj: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The iteration's batched codes for G_u and G_s: rows [K local | n_adj adjacency | rest global].

    w_u, w_t [K, num_ws, w_dim]; w_r [n_adj + n_glob, num_ws, w_dim] mapped codes (or None); idx [n_adj] which
    local code each adjacency sample starts from; alpha [n_adj]. Adjacency: delta = alpha (w_r - w_u) /
    ||w_r - w_u||_F, G_u at w_u + delta against G_s at w_t + delta. -> (ws_u, ws_s), each [B, num_ws, w_dim].
    """
    if w_r is None:
        return w_u, w_t
    direction = w_r[:n_adj] - w_u[idx]
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
    delta = (alpha / norm).view(-1, 1, 1) * direction
    ws_u = torch.cat([w_u, w_u[idx] + delta, w_r[n_adj:]])
    ws_s = torch.cat([w_t, w_t[idx] + delta, w_r[n_adj:]])
    return ws_u, ws_s


def render_step(generator: GeneratorAdapter, source_context, ws_u: torch.Tensor, ws_s: torch.Tensor,
                cam: Optional[torch.Tensor], cfg: EraseConfig, rng: Optional[torch.Generator]
                ) -> tuple[SynthesisOutput, SynthesisOutput]:
    """One iteration's renders: G_s (inside ``source_context()``, no graph) renders ``ws_s`` and G_u renders
    ``ws_u`` [B, num_ws, w_dim], each in ONE batch, with the iteration's camera [1, c_dim] shared by all rows.
    -> (out_u, out_s); features are rendered when ``cfg.feature_mse_weight`` > 0."""
    c = cam.expand(ws_u.shape[0], -1) if cam is not None else None
    need_features = cfg.feature_mse_weight > 0
    with source_context():
        out_s = generator.synthesis(ws_s, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    out_u = generator.synthesis(ws_u, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    return out_u, out_s


@contextlib.contextmanager
def _swapped(params: Sequence[nn.Parameter], frozen: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily give ``params`` the frozen source values (pointer swap, no copy): G_s for the full fine-tune."""
    for p, f in zip(params, frozen):
        p.data, f.data = f.data, p.data
    try:
        yield
    finally:
        for p, f in zip(params, frozen):
            p.data, f.data = f.data, p.data


class _Trainable:
    """What the loop trains: a fresh LoRA adapter (``trains="lora"``, settings from the method's
    :class:`~guide_unlearn.methods.LoraSettings`), or the synthesis parameters with a frozen copy of them
    (``trains="full"``)."""

    def __init__(self, generator: GeneratorAdapter, trains: str, settings: Any, rng: torch.Generator):
        self.model = module_of(generator)
        self.lora = trains == "lora"
        self.previous_active = L.active_adapters(self.model)
        self.previous_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.frozen: list[torch.Tensor] = []
        self.model.requires_grad_(False)
        if self.lora:
            if not isinstance(settings, LoraSettings):
                raise ConfigError(f"a LoRA method needs LoraSettings, got {type(settings).__name__}")
            self.settings = settings
            self.names = self._add_adapter(generator, settings, rng)
        else:
            self.names = generator.full_finetune_parameters()
            if not self.names:
                raise ConfigError("this generator declares no parameters for a full fine-tune")
        named = dict(self.model.named_parameters())
        self.params = [named[n] for n in self.names]
        for p in self.params:
            p.requires_grad_(True)
        if not self.lora:
            self.frozen = [p.detach().clone() for p in self.params]

    def _add_adapter(self, generator: GeneratorAdapter, settings: LoraSettings, rng: torch.Generator) -> list[str]:
        targets = [t.replace(".base_layer", "") for t in (settings.lora_targets or generator.lora_target_modules())]
        known = {n.replace(".base_layer", "") for n, _ in self.model.named_modules()}
        missing = [t for t in targets if t not in known]
        if missing:
            raise ConfigError(f"lora_targets {missing} are not modules of this generator; see "
                              "generator.lora_target_modules() for valid names")
        if TRAIN_ADAPTER in L.adapter_names(self.model):
            L.delete_adapter(self.model, TRAIN_ADAPTER)  # left over from an interrupted run
        self.lora_config = L.make_lora_config(settings.lora_rank, settings.lora_alpha, targets,
                                              generator.lora_layer_types())
        L.add_adapter(self.model, TRAIN_ADAPTER, self.lora_config)
        L.set_active_adapters(self.model, self.previous_active + [TRAIN_ADAPTER], trainable=[TRAIN_ADAPTER])
        L.reinit_lora_a(self.model, TRAIN_ADAPTER, rng)
        return [n for n, p in self.model.named_parameters() if f".{TRAIN_ADAPTER}." in n]

    @contextlib.contextmanager
    def source(self) -> Iterator[None]:
        """Render as G_s (the generator before this erase) inside this context."""
        with torch.no_grad():
            if self.lora:
                with L.suppressed(self.model, [TRAIN_ADAPTER]):
                    yield
            else:
                with _swapped(self.params, self.frozen):
                    yield

    def state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in zip(self.names, self.params)}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                if n not in tensors or tensors[n].shape != p.shape:
                    raise ConfigError(f"the saved erase state does not match this run (tensor {n}); delete it or "
                                      "run with the same config")
                p.copy_(tensors[n])

    def extract(self, metadata: dict[str, Any]) -> ForgetPatch:
        """Build the patch from the trained tensors (restore() puts the generator back)."""
        if self.lora:
            from peft.utils import get_peft_model_state_dict

            tensors = {k: v.detach().to("cpu").clone() for k, v in
                       get_peft_model_state_dict(self.model, adapter_name=TRAIN_ADAPTER).items()}
            lora_cfg = {"r": self.settings.lora_rank, "lora_alpha": self.settings.lora_alpha,
                        "target_modules": sorted(self.lora_config.target_modules)}
            return ForgetPatch("lora", tensors, metadata, lora_cfg)
        tensors = {n: (p.detach() - f).to("cpu").clone() for n, p, f in zip(self.names, self.params, self.frozen)}
        return ForgetPatch("delta", tensors, metadata)

    def restore(self) -> None:
        """Undo everything the run did to the generator (adapter removed, weights and grad flags restored)."""
        if self.lora:
            if TRAIN_ADAPTER in L.adapter_names(self.model):
                L.delete_adapter(self.model, TRAIN_ADAPTER)
            L.set_active_adapters(self.model, self.previous_active)
        else:
            with torch.no_grad():
                for p, f in zip(self.params, self.frozen):
                    p.copy_(f)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.previous_grad.get(n, False))


def _accelerator(cfg: EraseConfig, device: torch.device, trackers: Optional[Sequence[str]], project_dir: Optional[str]):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kwargs: dict[str, Any] = dict(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)
    if trackers:
        kwargs.update(log_with=list(trackers), project_dir=project_dir)
    try:
        return Accelerator(**kwargs)
    except ValueError:
        # accelerate's state is process-global; a previous erase with other settings must not block this one.
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def downsample_history(history: list[dict[str, float]], max_points: int = HISTORY_POINTS) -> dict[str, list]:
    """The loss history as columns for the patch metadata (metadata key ``"loss_history"``):
    {"step": [int], "<term>": [float]} with at most ``max_points`` evenly spaced entries, the last step always
    kept (the audit report plots it; a patch stays small)."""
    if not history:
        return {"step": []}
    n, k = len(history), min(len(history), max_points)
    idx = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
    keys = [k for k in history[-1] if k != "step"]
    out: dict[str, list] = {"step": [int(history[i].get("step", i)) for i in idx]}
    for k in keys:
        out[k] = [round(float(history[i].get(k, float("nan"))), 6) for i in idx]
    return out


def patch_metadata(generator: GeneratorAdapter, cfg: EraseConfig, base: str, distance: float,
                   alpha: tuple[float, float], final: dict[str, float], perceptual: PerceptualDistance,
                   identity: Optional[IdentityModel], num_codes: int,
                   history: list[dict[str, float]]) -> dict[str, Any]:
    """What every erase records in its patch (the method and its recipe, final losses, loss history, the networks
    used); never a code, a target or an embedding of the person. ``final``: the last logged losses ('step' and
    'round' are dropped)."""
    return {
        "generator_family": generator.family,
        "generator_config": _plain(getattr(generator, "config", {})),
        "base_fingerprint": base,
        "method": cfg.method,
        "base_merged": trained_on(generator),  # with base_fingerprint: the exact weights this patch was made on
        "erase_config": cfg.recipe_dict(),
        "target_distance_used": distance,
        "adjacency_alpha_used": [alpha[0], alpha[1]],
        "final_losses": {k: v for k, v in final.items() if k not in ("step", "round")},
        "perceptual": getattr(perceptual, "name", type(perceptual).__name__),
        "perceptual_is_learned": bool(getattr(perceptual, "is_learned", False)),
        "identity_model": getattr(identity, "name", None)
        if identity is not None and (cfg.id_weight > 0 or cfg.global_id_weight > 0) else None,
        "library_version": _version(),
        "num_codes": num_codes,
        "loss_history": downsample_history(history),
    }


def _progress(total: int, run: RunOptions, start: int):
    if not run.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="erasing", leave=False)


def _plain(config: Any) -> dict[str, Any]:
    out = {}
    for k, v in dict(config).items():
        if k.startswith("_"):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _version() -> str:
    from . import __version__

    return __version__
