"""The erase loop: UFO target + LTU losses, a LoRA (or full) update of the generator, run through accelerate."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from . import lora as L
from .config import EraseConfig, RunOptions
from .errors import ConfigError, LatentError, TrainingDivergedError
from .fingerprint import patch_state, trained_on
from .frozen import cached_constants
from .io import PathLike
from .joint import JointBalance, PersonProgress, PersonSchedule, _person_index, _record_people
from .losses import ltu_loss
from .patch import ForgetPatch
from .resume import STATE_FILE, load_state, save_state
from .protocols import GeneratorAdapter, IdentityModel, PerceptualDistance, module_of
from .targets import separated_targets, target_similarity, typical_distance, ufo_target

logger = logging.getLogger(__name__)
TRAIN_ADAPTER = "erasing"
HISTORY_POINTS = 200  # at most this many loss-history points are stored in a patch (metadata "loss_history")


@dataclass
class ErasureResult:
    """What :meth:`IdentityEraser.erase` returns.

    patch:          the ForgetPatch (not applied to the eraser).
    w_source:       the person's code(s) w_u [K, num_ws, w_dim] (kept in memory only; never in the patch).
    w_target:       the UFO target(s) w_t [K, num_ws, w_dim].
    history:        per logged step, a dict of losses ('loss', 'local', 'adjacency', 'global', ...).
    images_before:  G_s(w_u) [K, 3, H, W] in [-1, 1]; images_after: G_u(w_u); target_images: G_s(w_t).
    views_before / views_after: multi-view renders [V, 3, H, W] of the first code for camera models, else None.
    metrics:        unoptimised measurements taken after the erase (pixel MSEs, see ``engine.measure``).
    seconds:        wall time of the optimisation.
    photos:         the aligned photos [K, 3, H', W'] in [-1, 1] the codes were inverted from (None for codes).
    verdict:        :func:`judge_erasure` of ``metrics``: {'erased', 'preserved', 'succeeded', 'erasure_ratio',
                    'preservation_ratio', 'limits', 'problems'}; ``succeeded`` is None when nothing was measured.
    """

    patch: ForgetPatch
    w_source: torch.Tensor
    w_target: torch.Tensor
    history: list[dict[str, float]]
    images_before: torch.Tensor
    images_after: torch.Tensor
    target_images: torch.Tensor
    views_before: Optional[torch.Tensor] = None
    views_after: Optional[torch.Tensor] = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    photos: Optional[torch.Tensor] = None
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> Optional[bool]:
        """True when the measured figures say the person was erased and the rest kept (:func:`judge_erasure`),
        False when they say it failed, None when nothing was measured."""
        return self.verdict.get("succeeded")


@dataclass
class EraseRun:
    """What :func:`run_erase` returns (the optimisation only; :class:`ErasureResult` adds the measurements).

    patch:      the new ForgetPatch (not applied).
    w_target:   the UFO target(s) [K, num_ws, w_dim] of the erased codes (memory only).
    history:    per logged step, a dict of losses ('step', 'loss', 'local', 'adjacency', 'global', ...).
    seconds:    wall time of the optimisation loop (set-up excluded).
    run:        the :class:`RunOptions` the run used.
    """

    patch: ForgetPatch
    w_target: torch.Tensor
    history: list[dict[str, float]]
    seconds: float
    run: RunOptions = field(default_factory=RunOptions)

    def __iter__(self) -> Iterator[Any]:
        """Compatibility with the former 4-tuple: ``patch, w_t, history, seconds = run_erase(...)``."""
        return iter((self.patch, self.w_target, self.history, self.seconds))


ERASURE_RATIO_LIMIT = 0.5
"""An erase succeeded only if G_u(w_u) got at least halfway to the target: erased_mse / before_mse <= 0.5 (the LoRA
defaults reach 0.07 on the tiny model, lr 1e-3 x 100 steps leaves 0.40, too few steps leave ~1: benchmarks/
sweep_lora_lr.py)."""
PRESERVATION_RATIO_LIMIT = 0.5
"""...and only if random samples changed by less than half the difference between two random samples:
preserved_mse / random_pair_mse <= 0.5 (the defaults give 0.05 on the tiny model)."""


def judge_erasure(metrics: dict[str, float], iterations: Optional[int] = None, lr: Optional[float] = None
                  ) -> dict[str, Any]:
    """Judge an erase from the figures :meth:`IdentityEraser.erase` already measured (pixel MSEs, not
    optimised by the loop). -> {'erased': bool, 'preserved': bool, 'succeeded': bool, 'erasure_ratio':
    erased_mse / before_mse, 'preservation_ratio': preserved_mse / random_pair_mse, 'limits': {...}, 'problems':
    [one sentence each, saying what to do]}; the bools are None when ``metrics`` lacks the figures."""
    limits = {"erasure_ratio": ERASURE_RATIO_LIMIT, "preservation_ratio": PRESERVATION_RATIO_LIMIT}
    if not {"erased_mse", "before_mse", "preserved_mse", "random_pair_mse"} <= set(metrics):
        return {"erased": None, "preserved": None, "succeeded": None, "limits": limits,
                "problems": ["not measured (measure=False): nothing says whether the person was erased"]}
    ratio = metrics["erased_mse"] / max(metrics["before_mse"], 1e-12)
    keep = metrics["preserved_mse"] / max(metrics["random_pair_mse"], 1e-12)
    problems = []
    erased, preserved = ratio <= ERASURE_RATIO_LIMIT, keep <= PRESERVATION_RATIO_LIMIT
    if not erased:
        more = f" (now {iterations})" if iterations is not None else ""
        problems.append(f"NOT ERASED: the person's rendering moved only {max(0.0, 1 - ratio):.0%} of the way to the "
                        f"target (erased_mse / before_mse = {ratio:.2f}, must be <= {ERASURE_RATIO_LIMIT}); run more "
                        f"iterations{more} or a larger learning rate")
    if not preserved:
        now = f" (now {lr})" if lr is not None else ""
        problems.append(f"NOT PRESERVED: other people changed too (preserved_mse / random_pair_mse = {keep:.2f}, "
                        f"must be <= {PRESERVATION_RATIO_LIMIT}); lower the learning rate{now} or raise global_weight")
    return {"erased": erased, "preserved": preserved, "succeeded": erased and preserved,
            "erasure_ratio": round(ratio, 4), "preservation_ratio": round(keep, 4), "limits": limits,
            "problems": problems}


def check_latents(ws: Any, generator: GeneratorAdapter) -> torch.Tensor:
    """Validate person codes: a float tensor [K, num_ws, w_dim] (or [num_ws, w_dim]) of finite values."""
    if not torch.is_tensor(ws):
        raise LatentError(f"latent codes must be a torch.Tensor, got {type(ws).__name__}")
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    want = (generator.num_ws, generator.w_dim)
    if ws.ndim != 3 or tuple(ws.shape[1:]) != want or ws.shape[0] < 1:
        raise LatentError(f"latent codes must be [K, {want[0]}, {want[1]}] for this generator, got "
                          f"{list(ws.shape)}; invert the photo with eraser.invert() to get them")
    if not ws.is_floating_point():
        raise LatentError(f"latent codes must be floating point, got {ws.dtype}")
    device = generator.w_avg.device
    if ws.device != device:
        raise LatentError(f"latent codes are on {ws.device} but the generator is on {device}; call .to({str(device)!r})")
    if not torch.isfinite(ws).all():
        raise LatentError("latent codes contain NaN or Inf; re-run the inversion")
    return ws.detach().to(torch.float32)


def check_identity(cfg: EraseConfig, identity: Optional[IdentityModel]) -> None:
    """ConfigError when the config asks for an identity term that needs a model and none is given (the loss
    would silently drop it). Shared by the plain and the robust loop."""
    if cfg.global_id_weight > 0 and identity is None:
        raise ConfigError("global_id_weight > 0 needs an identity model; pass identity_model= to the eraser (e.g. "
                          "load_identity_model('faceapi')) or set global_id_weight=0")


def resolve_distances(cfg: EraseConfig, generator: GeneratorAdapter) -> tuple[float, tuple[float, float]]:
    """-> (UFO distance d, adjacency alpha range) with the backend's defaults and relative units resolved."""
    default_d, default_rel = generator.default_target_distance()
    d = cfg.target_distance if cfg.target_distance is not None else default_d
    rel = cfg.target_distance_relative if cfg.target_distance_relative is not None else default_rel
    rel_alpha = cfg.adjacency_alpha_relative if cfg.adjacency_alpha_relative is not None else default_rel
    lo, hi = cfg.adjacency_alpha
    if rel or rel_alpha:
        typical = typical_distance(generator.mapping, generator.w_avg, generator.z_dim, device=generator.w_avg.device)
        d = d * typical if rel else d
        if rel_alpha:
            lo, hi = lo * typical / 30.0, hi * typical / 30.0
    return d, (lo, hi)


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
    """What the loop trains: a fresh LoRA adapter, or the synthesis parameters with a frozen copy of them."""

    def __init__(self, generator: GeneratorAdapter, cfg: EraseConfig, rng: torch.Generator):
        self.model = module_of(generator)
        self.cfg = cfg
        self.previous_active = L.active_adapters(self.model)
        self.previous_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.model.requires_grad_(False)
        if not cfg.full_finetune:
            targets = [t.replace(".base_layer", "") for t in (cfg.lora_targets or generator.lora_target_modules())]
            known = {n.replace(".base_layer", "") for n, _ in self.model.named_modules()}
            missing = [t for t in targets if t not in known]
            if missing:
                raise ConfigError(f"lora_targets {missing} are not modules of this generator; see "
                                  "generator.lora_target_modules() for valid names")
            if TRAIN_ADAPTER in L.adapter_names(self.model):
                L.delete_adapter(self.model, TRAIN_ADAPTER)  # left over from an interrupted run
            self.lora_config = L.make_lora_config(cfg.lora_rank, cfg.lora_alpha, targets, generator.lora_layer_types())
            L.add_adapter(self.model, TRAIN_ADAPTER, self.lora_config)
            L.set_active_adapters(self.model, self.previous_active + [TRAIN_ADAPTER], trainable=[TRAIN_ADAPTER])
            L.reinit_lora_a(self.model, TRAIN_ADAPTER, rng)
            self.names = [n for n, p in self.model.named_parameters() if f".{TRAIN_ADAPTER}." in n]
            self.frozen: list[torch.Tensor] = []
        else:
            self.names = generator.full_finetune_parameters()
            if not self.names:
                raise ConfigError("this generator declares no parameters for a full fine-tune")
        named = dict(self.model.named_parameters())
        self.params = [named[n] for n in self.names]
        for p in self.params:
            p.requires_grad_(True)
        if cfg.full_finetune:
            self.frozen = [p.detach().clone() for p in self.params]

    @contextlib.contextmanager
    def source(self) -> Iterator[None]:
        """Render as G_s (the generator before this erase) inside this context."""
        with torch.no_grad():
            if not self.cfg.full_finetune:
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
        if not self.cfg.full_finetune:
            from peft.utils import get_peft_model_state_dict

            tensors = {k: v.detach().to("cpu").clone() for k, v in
                       get_peft_model_state_dict(self.model, adapter_name=TRAIN_ADAPTER).items()}
            lora_cfg = {"r": self.cfg.lora_rank, "lora_alpha": self.cfg.lora_alpha,
                        "target_modules": sorted(self.lora_config.target_modules)}
            return ForgetPatch("lora", tensors, metadata, lora_cfg)
        tensors = {n: (p.detach() - f).to("cpu").clone() for n, p, f in zip(self.names, self.params, self.frozen)}
        return ForgetPatch("delta", tensors, metadata)

    def restore(self) -> None:
        """Undo everything the run did to the generator (adapter removed, weights and grad flags restored)."""
        if not self.cfg.full_finetune:
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


def run_erase(
    generator: GeneratorAdapter,
    w_u: torch.Tensor,
    cfg: EraseConfig,
    perceptual: PerceptualDistance,
    identity: Optional[IdentityModel] = None,
    state_dir: Optional[PathLike] = None,
    trackers: Optional[Sequence[str]] = None,
    extra_metadata: Optional[dict[str, Any]] = None,
    person_of: Optional[torch.Tensor] = None,
    person_ids: Optional[Sequence[str]] = None,
    keep: Optional[torch.Tensor] = None,
    run: Optional[RunOptions] = None,
) -> EraseRun:
    """Erase the identity whose code(s) are ``w_u`` [K, num_ws, w_dim] from ``generator``.

    All K codes are photos of ONE person and are erased together, unless ``person_of`` [K] (long, 0..P-1) says
    which of P people each code shows: then each person gets their own UFO target (kept apart when
    ``cfg.distinct_targets``), L_local takes ``cfg.persons_per_step`` people per iteration in a fixed cyclic
    order (see :class:`PersonSchedule`), the adjacency samples start from the visited people's codes, and
    L_global is weighted per visited person by ``cfg.joint_balance`` (see :class:`JointBalance`).
    ``person_ids`` (P strings, e.g. request ids) label the per-person final losses in the patch metadata
    (key ``"requests"``); no code or target is ever stored.

    ``keep`` [M, num_ws, w_dim]: codes of people erased by patches applied before this run (continual requests).
    Each joins the schedule as a person whose target is its own code under G_s — i.e. its current, already
    erased rendering — so the new update cannot bring them back. Only their number is recorded. The generator is
    left exactly as it was (the new patch is returned, not applied).

    ``run`` (:class:`RunOptions`) says how the run behaves; without it, the options come from ``cfg``'s
    compatibility fields (progress, log_every, checkpoint_every) and ``state_dir`` / ``trackers``. With a state
    folder and ``checkpoint_every > 0`` the run saves resumable state there and resumes from it if present; the
    state holds the person's code, so it is deleted when the run succeeds. Only ``cfg`` decides the patch.
    -> :class:`EraseRun` (patch, w_target [K, num_ws, w_dim], history, seconds).
    """
    if run is None:
        run = cfg.run_options(state_dir=state_dir, trackers=trackers)
    elif state_dir is not None or trackers is not None:
        raise ConfigError("give state_dir and trackers in run=RunOptions(...), not beside it")
    state_dir, trackers = run.state_dir, run.trackers
    w_u = check_latents(w_u, generator)
    check_identity(cfg, identity)
    model = module_of(generator)
    device = generator.w_avg.device
    k = w_u.shape[0]
    d, (alpha_lo, alpha_hi) = resolve_distances(cfg, generator)
    person_of, people = _person_index(person_of, k, person_ids, device)
    if people > 1 and cfg.distinct_targets:
        w_t = separated_targets(w_u, person_of, generator.w_avg, cfg.target, d)
    else:
        w_t = ufo_target(w_u, generator.w_avg, cfg.target, d)
    erased_people, erased_codes = people, k
    if keep is not None:  # earlier people: their target is their own code under G_s (already erased there)
        keep = check_latents(keep, generator)
        w_u, w_t = torch.cat([w_u, keep]), torch.cat([w_t, keep])
        person_of = torch.cat([person_of, people + torch.arange(keep.shape[0], device=device)])
        people += keep.shape[0]
        k = w_u.shape[0]
    schedule = PersonSchedule(person_of, cfg.persons_per_step, cfg.seed) if people > 1 else None
    balanced = JointBalance(cfg, erased_people)
    progress = (PersonProgress(cfg.joint_done_ratio, erased_people, people)
                if schedule is not None and erased_people > 1 and cfg.joint_done_ratio > 0 else None)
    stopped_at: Optional[int] = None
    per_person: list[dict[str, float]] = [{} for _ in range(people)]
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    base = patch_state(model)["base_fingerprint"]

    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    trainable = _Trainable(generator, cfg, rng)
    scope = contextlib.ExitStack()
    try:
        if not cfg.full_finetune:  # only the LoRA trains: every base weight stays as it is until the run ends
            scope.enter_context(cached_constants())
        accelerator = _accelerator(cfg, device, trackers, str(state_dir) if state_dir else None)
        optimizer = torch.optim.Adam(trainable.params, lr=cfg.lr, betas=cfg.adam_betas)
        optimizer = accelerator.prepare(optimizer)
        if trackers:
            accelerator.init_trackers("guide_unlearn", config={k_: str(v) for k_, v in cfg.recipe_dict().items()})
        history: list[dict[str, float]] = []
        start = 0
        if state_path is not None and state_path.is_file():
            start, history = load_state(state_path, trainable, optimizer, rng, cfg, w_u, progress)
            logger.info("resumed erase from %s at step %d", state_path, start)

        n_adj, n_glob = cfg.adjacency_samples, cfg.global_samples
        t0 = time.perf_counter()
        bar = _progress(cfg, run, start)
        for step in range(start, cfg.iterations):
            cam = generator.sample_cameras(1, rng)
            z = torch.randn(n_adj + n_glob, generator.z_dim, generator=rng, device=device)
            with torch.no_grad():
                w_r = generator.mapping(z, None, truncation_psi=cfg.truncation_psi) if n_adj + n_glob else None
            rows = schedule.rows(step) if schedule is not None else None
            w_us, w_ts = (w_u, w_t) if rows is None else (w_u[rows], w_t[rows])
            k_s = w_us.shape[0]
            local_w = None if rows is None else schedule.weights[rows]
            if progress is None:
                idx = torch.randint(0, k_s, (n_adj,), generator=rng, device=device)
                step_cfg = balanced(schedule.people(step)) if rows is not None else cfg  # host ints: no device sync
            else:  # done people weigh 0 and start no adjacency sample (joint.PersonProgress)
                idx, step_cfg, local_w = _active_rows(progress, schedule.person_rows(step), balanced, local_w,
                                                      n_adj, rng, device)
            alpha = torch.rand(n_adj, generator=rng, device=device) * (alpha_hi - alpha_lo) + alpha_lo
            ws_u, ws_s = step_codes(w_us, w_ts, w_r, idx, alpha, n_adj)
            with accelerator.autocast():
                loss = compute_step_loss(generator, trainable.source, ws_u, ws_s, cam, k_s, n_adj, step_cfg,
                                         perceptual, identity, rng, local_w)
            if rows is not None:
                _record_people(per_person, person_of[rows], loss.local_rows, step)
            if progress is not None:
                progress.update(schedule.person_rows(step), loss.local_rows["local"].tolist(), step)
                if progress.finished:  # every person erased: this update would only push them further
                    stopped_at = step
                    history.append({"step": float(step), **loss.parts})
                    break
            if not math.isfinite(loss.parts["loss"]):  # already on the host: no extra device sync
                raise TrainingDivergedError(
                    f"the loss became {loss.parts['loss']} at step {step}; lower lr (now {cfg.lr}) or use "
                    "mixed_precision='no'")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss.total)
            optimizer.step()
            if step % run.log_every == 0 or step == cfg.iterations - 1:
                entry = {"step": float(step), **loss.parts}
                history.append(entry)
                if trackers:
                    accelerator.log(loss.parts, step=step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k_: f"{v:.4f}" for k_, v in loss.parts.items() if k_ in ("loss", "local", "adjacency", "global")})
            if state_path is not None and run.checkpoint_every and (step + 1) % run.checkpoint_every == 0 \
                    and step + 1 < cfg.iterations:
                save_state(state_path, step + 1, history, trainable, optimizer, rng, cfg, w_u, progress)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        if trackers:
            accelerator.end_training()
        final = history[-1] if history else {}
        metadata = patch_metadata(generator, cfg, base, d, (alpha_lo, alpha_hi), final, perceptual, identity,
                                  erased_codes, history)
        if keep is not None:
            metadata["kept_erased"] = int(keep.shape[0])
        if people > 1:
            metadata["num_persons"] = erased_people
            metadata["persons_per_step"] = min(cfg.persons_per_step, people)
            if erased_people > 1:
                mine = person_of < erased_people
                metadata["target_separation"] = target_similarity(w_t[mine], person_of[mine], generator.w_avg)
        if progress is not None:
            metadata["stopped_at_step"] = stopped_at  # None: ran every iteration
        if person_ids is not None:
            if people == 1:
                per_person = [metadata["final_losses"]]
            metadata["requests"] = [
                {"request_id": str(rid), "final_losses": {k_: v for k_, v in losses.items() if k_ != "step"},
                 "last_step": int(losses.get("step", final.get("step", cfg.iterations - 1))),
                 **({} if progress is None else {"done_at_step": progress.done_step[p]})}
                for p, (rid, losses) in enumerate(zip(person_ids, per_person[:erased_people]))]
        metadata.update(extra_metadata or {})
        patch = trainable.extract(metadata)
    finally:
        scope.close()
        trainable.restore()
    if state_path is not None and state_path.exists():
        state_path.unlink()  # holds the person's code: never keep it after success
    return EraseRun(patch=patch, w_target=w_t[:erased_codes], history=history, seconds=seconds, run=run)


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
    """What every erase records in its patch (the recipe only, final losses, loss history, the networks used);
    never a code, a target or an embedding of the person. ``final``: the last logged losses ('step' and 'round'
    are dropped)."""
    return {
        "generator_family": generator.family,
        "generator_config": _plain(getattr(generator, "config", {})),
        "base_fingerprint": base,
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


def compute_step_loss(generator: GeneratorAdapter, source_context, ws_u: torch.Tensor, ws_s: torch.Tensor,
                      cam: Optional[torch.Tensor], k: int, n_adj: int, cfg: EraseConfig,
                      perceptual: PerceptualDistance, identity: Optional[IdentityModel],
                      rng: Optional[torch.Generator], local_weights: Optional[torch.Tensor] = None):
    """One iteration's LTU loss: G_s (inside ``source_context()``, no graph) renders ``ws_s`` and G_u renders
    ``ws_u`` [B, num_ws, w_dim], each in ONE batch, with the iteration's camera [1, c_dim] shared by all rows.
    ``local_weights`` [k]: see :func:`ltu_loss`."""
    n_glob = ws_u.shape[0] - k - n_adj
    c = cam.expand(ws_u.shape[0], -1) if cam is not None else None
    need_features = cfg.feature_mse_weight > 0
    with source_context():
        out_s = generator.synthesis(ws_s, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    out_u = generator.synthesis(ws_u, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    return ltu_loss(out_u, out_s, k, n_adj, n_glob, cfg, perceptual, identity, local_weights)


def _active_rows(progress: PersonProgress, person_rows: list[int], balanced: JointBalance,
                 local_w: torch.Tensor, n_adj: int, rng: torch.Generator, device: torch.device):
    """The iteration's settings with per-person early stop: (idx [n_adj] adjacency start rows, drawn among the
    rows of people not done, the EraseConfig (L_global balanced over the active people; when every visited person
    is done: no adjacency term and L_global weighted as for all visited people, a constant factor that Adam's step
    does not depend on), local row weights [k_s] with done people's rows at 0)."""
    active = progress.active(person_rows)
    pool = torch.nonzero(active).flatten().to(device)
    live = [p for p, a in zip(person_rows, active.tolist()) if a]
    if len(pool):
        idx = pool[torch.randint(0, len(pool), (n_adj,), generator=rng, device=device)]
        step_cfg = balanced(live)
    else:  # same draws as a full step, so the random stream does not depend on who is done
        idx = torch.randint(0, len(person_rows), (n_adj,), generator=rng, device=device)
        step_cfg = balanced(person_rows).replace(adjacency_weight=0.0)
    return idx, step_cfg, local_w * active.to(device=device, dtype=local_w.dtype)


def _progress(cfg: EraseConfig, run: RunOptions, start: int):
    if not run.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.iterations, initial=start, desc="erasing", leave=False)


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
