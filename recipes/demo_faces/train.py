"""Train the demo face generator: the library's own StyleGAN2 classes, trained as GLO on shared/faces.

GLO (Generative Latent Optimisation, Bojanowski et al. 2018) needs no discriminator, which is what makes a useful
face model trainable in about an hour on two CPU cores from ~125 photos:

- every training photo owns a learnable code z_i [z_dim], initialised from a PCA of the images (whitened, so the
  codes start out distributed like the N(0, I) samples the mapping will see at test time);
- z -> the StyleGAN2 mapping MLP -> one w broadcast to every layer -> synthesis; mapping, synthesis and codes are
  trained jointly, so random z give face-like samples and a photo can be inverted in z or W;
- loss: L1 + L1 on image gradients, at every scale of ``loss_scales`` (64, 32, 16 px);
- Gaussian noise on the codes (``code_noise`` fading to 0 at ``code_noise_until``) spreads each code into a small
  neighbourhood, so nearby codes render nearby faces (what the erase's adjacency loss relies on);
- Adam (``lr`` network, ``code_lr`` codes), constant for ``constant_fraction`` of the run, then cosine to 0;
- stage 2 (``pull_people``, the ``pull_*`` settings): a short fine-tune that also draws the codes of photos of
  one person together, after which the run writes the code book (training codes + dlib descriptors) that the
  ``code-projector`` inverter uses to start a photo of a known person from that person's code.

Everything is seeded from ``TrainConfig.seed``; stage 1 writes a resumable state every ``save_every`` steps
(stage 2 takes about 6.5 minutes and is rerun from the finished stage-1 state).

    python -m guide_unlearn.recipes.demo_faces.train --config recipes/demo_faces/config.json --out runs/demo-faces

``--exclude PERSON ...`` / ``--exclude-file FILE`` train the same run without some people (``data.leave_out``):
a model that never saw them, the reference an erasure of them is measured against (``demo-faces-oracle-8`` is
this recipe with ``--exclude-file recipes/demo_faces/oracle_8.txt``).
"""

from __future__ import annotations

import argparse
import io
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from guide_unlearn.errors import ConfigError

logger = logging.getLogger(__name__)


RUN_ONLY = ("threads", "save_every", "log_every")  # how a run is carried out, not what it trains


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a demo-model training run (the run is a function of this and the photos)."""

    seed: int = 0
    resolution: int = 64  # output side (power of two)
    z_dim: int = 64  # per-photo code width
    w_dim: int = 256  # style width
    mapping_layers: int = 4  # mapping MLP depth
    mapping_lr_multiplier: float = 1.0  # equalised-lr multiplier of the mapping (trained from scratch with it)
    channel_base: int = 2048  # channels = min(channel_base / res, channel_max): 256/256/128/64/32 at 4..64 px
    channel_max: int = 256
    iterations: int = 15000  # optimiser steps
    batch: int = 16
    lr: float = 2e-3  # Adam on mapping + synthesis
    code_lr: float = 1e-2  # Adam on the per-photo codes
    betas: tuple[float, float] = (0.9, 0.99)
    constant_fraction: float = 0.4  # share of the run at constant lr before the cosine decay
    code_noise: float = 0.3  # std of the Gaussian noise on codes at the start
    code_noise_until: float = 0.7  # fraction of the run at which the noise has faded to 0
    loss_scales: tuple[int, ...] = (64, 32, 16)  # resolutions of the L1 + gradient-L1 loss
    gradient_weight: float = 1.0  # weight of the image-gradient L1 beside the plain L1
    threads: int = 2  # torch CPU threads (set explicitly: the speed of the run depends on it)
    save_every: int = 500  # steps between resumable states
    log_every: int = 100
    # Stage 2, the same-person pull (``pull_people``): a short fine-tune that draws the codes of photos showing
    # the same person to within ``pull_radius`` of their mean, so that the code book gives one person one place.
    pull_iterations: int = 0  # 0 = no second stage
    pull_radius: float = 0.5  # allowed distance of a code from its person's mean code (z units; codes ~17 long)
    pull_weight: float = 10.0  # weight of the squared excess distance beside the image loss
    pull_lr: float = 5e-4  # Adam on mapping + synthesis (cosine from this to 0)
    pull_code_lr: float = 5e-3  # Adam on the codes
    pull_code_noise: float = 0.1  # std of the code noise, fading with the learning rate

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.iterations < 1 or self.batch < 1 or self.threads < 1:
            raise ConfigError("iterations, batch and threads must be >= 1")
        if not 0 <= self.constant_fraction <= 1 or not 0 < self.code_noise_until <= 1:
            raise ConfigError("constant_fraction must be in [0, 1] and code_noise_until in (0, 1]")
        if self.pull_iterations < 0 or self.pull_radius < 0 or self.pull_weight < 0:
            raise ConfigError("pull_iterations, pull_radius and pull_weight must be >= 0")

    def stage1(self) -> dict[str, Any]:
        """The settings the first stage (``train``) depends on: what a resumable state must agree with (how a run is
        carried out -- threads, how often it saves and logs -- may change between a run and its resumption)."""
        return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(self))).items()
                if not k.startswith("pull_") and k not in RUN_ONLY}

    @classmethod
    def from_json(cls, path: Path, **overrides: Any) -> "TrainConfig":
        """A config from a JSON file (unknown keys are an error), with keyword overrides on top."""
        from guide_unlearn.gate import read_json

        data = read_json(path, "model-config")  # the reading gate: bounded JSON
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config is a JSON object")
        data.pop("_comment", None)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
        for key in ("betas", "loss_scales"):
            if key in data:
                data[key] = tuple(data[key])
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def generator_config(self) -> dict[str, Any]:
        """Constructor kwargs of the StyleGAN2Generator this run trains."""
        return dict(z_dim=self.z_dim, w_dim=self.w_dim, c_dim=0, img_resolution=self.resolution, img_channels=3,
                    mapping_layers=self.mapping_layers, mapping_lr_multiplier=self.mapping_lr_multiplier,
                    channel_base=self.channel_base, channel_max=self.channel_max, conv_clamp=None, use_noise=True)


def pca_codes(images: torch.Tensor, dim: int) -> torch.Tensor:
    """Whitened PCA scores of images [N, 3, R, R] -> codes [N, dim] with zero mean and unit variance per column.

    With fewer photos than ``dim`` the missing columns are small Gaussian values from the caller's seed state.
    """
    x = images.flatten(1).double()
    x = x - x.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    k = min(dim, x.shape[0] - 1)
    scores = u[:, :k] * s[:k]
    scores = scores / scores.std(0, keepdim=True).clamp_min(1e-8)
    if k < dim:
        scores = torch.cat([scores, 0.1 * torch.randn(x.shape[0], dim - k, dtype=torch.float64)], 1)
    return scores.float()


def multiscale_l1(out: torch.Tensor, target: torch.Tensor, scales: tuple[int, ...], gradient_weight: float
                  ) -> torch.Tensor:
    """Mean over ``scales`` of L1 + ``gradient_weight`` × L1 of the horizontal/vertical differences. -> []"""
    total = out.new_zeros(())
    for s in scales:
        a = out if out.shape[-1] == s else F.adaptive_avg_pool2d(out, s)
        b = target if target.shape[-1] == s else F.adaptive_avg_pool2d(target, s)
        loss = (a - b).abs().mean()
        dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
        dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
        loss = loss + gradient_weight * ((dxa - dxb).abs().mean() + (dya - dyb).abs().mean())
        total = total + loss
    return total / len(scales)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: 1 for the constant part, then a cosine to 0."""
    start = cfg.constant_fraction * cfg.iterations
    if step < start:
        return 1.0
    t = (step - start) / max(1.0, cfg.iterations - start)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def noise_std(step: int, cfg: TrainConfig) -> float:
    """Std of the code noise at ``step`` (linear fade to 0 at ``code_noise_until`` of the run)."""
    return cfg.code_noise * max(0.0, 1 - step / (cfg.code_noise_until * cfg.iterations))


@torch.no_grad()
def estimate_w_avg(generator, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean w [w_dim] of the mapping over ``n`` seeded N(0, I) samples (written into ``mapping.w_avg``)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.z_dim, generator=g)
    w = generator.mapping(z, None)[:, 0].mean(0)
    generator.mapping.w_avg.copy_(w)
    return w


def _state(generator, codes, opt, step: int, cfg: TrainConfig, rng: torch.Generator, seconds: float) -> dict:
    return {"generator": generator.state_dict(), "codes": codes.detach().clone(), "optimizer": opt.state_dict(),
            "step": torch.tensor(step), "rng": rng.get_state(), "seconds": torch.tensor(seconds),
            "config": json.dumps(dataclasses.asdict(cfg))}


def train(cfg: TrainConfig, images: torch.Tensor, out_dir: Optional[Path] = None,
          log: Optional[Callable[[dict], None]] = None):
    """GLO-train a StyleGAN2Generator on aligned images [N, 3, R, R] in [-1, 1].

    out_dir: where the resumable state (``train_state.pt``) and ``log.jsonl`` go (None: nothing is written);
    an existing state for the same config is resumed. -> (generator in eval mode with w_avg set, codes [N, z_dim],
    summary dict with 'seconds', 'final_loss', 'iterations').
    """
    from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator
    from guide_unlearn.io import atomic_write_bytes

    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != cfg.resolution:
        raise ConfigError(f"images must be [N, 3, {cfg.resolution}, {cfg.resolution}], got {list(images.shape)}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # parameter initialisation (the constructor draws from the global generator)
    generator = StyleGAN2Generator(**cfg.generator_config())
    generator.train()
    codes = torch.nn.Parameter(pca_codes(images, cfg.z_dim))
    opt = torch.optim.Adam([{"params": list(generator.parameters()), "lr": cfg.lr},
                            {"params": [codes], "lr": cfg.code_lr}], betas=cfg.betas)
    rng = torch.Generator().manual_seed(cfg.seed + 1)  # batches and code noise
    step, seconds = 0, 0.0
    state_file = out_dir / "train_state.pt" if out_dir is not None else None
    if state_file is not None and state_file.exists():
        from guide_unlearn.checkpoints.torch_zip import load_torch_file

        state = load_torch_file(state_file, kind="resume-state")  # allow-list scan + weights_only, bounded
        saved = {k: v for k, v in json.loads(state["config"]).items()
                 if not k.startswith("pull_") and k not in RUN_ONLY}
        if saved != cfg.stage1():
            changed = sorted(k for k in set(saved) | set(cfg.stage1()) if saved.get(k) != cfg.stage1().get(k))
            raise ConfigError(f"{state_file} was written by another config ({', '.join(changed)} differ); resume "
                              "with the settings it started with, or use a new --out folder")
        generator.load_state_dict(state["generator"])
        with torch.no_grad():
            codes.copy_(state["codes"])
        opt.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        step, seconds = int(state["step"]), float(state["seconds"])
        logger.info("resumed at step %d", step)
    n = images.shape[0]
    base_lrs = [cfg.lr, cfg.code_lr]
    loss_ema = None
    t0 = time.perf_counter() - seconds
    while step < cfg.iterations:
        factor = lr_factor(step, cfg)
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * factor
        idx = torch.randint(n, (cfg.batch,), generator=rng)
        z = codes[idx]
        sigma = noise_std(step, cfg)
        if sigma > 0:
            z = z + sigma * torch.randn(z.shape, generator=rng)
        out = generator.synthesis(generator.mapping(z, None), noise_mode="const").images
        loss = multiscale_l1(out, images[idx], cfg.loss_scales, cfg.gradient_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
        if state_file is not None and (step % cfg.save_every == 0 or step == cfg.iterations):
            buf = io.BytesIO()
            torch.save(_state(generator, codes, opt, step, cfg, rng, time.perf_counter() - t0), buf)
            atomic_write_bytes(state_file, buf.getvalue(), overwrite=True)  # the run's own state, replaced
        if log is not None and (step % cfg.log_every == 0 or step == cfg.iterations):
            log({"step": step, "loss": round(loss_ema, 5), "lr_factor": round(factor, 4), "code_noise": round(sigma, 4),
                 "seconds": round(time.perf_counter() - t0, 1)})
    generator.eval()
    estimate_w_avg(generator, seed=cfg.seed)
    return generator, codes.detach(), {"seconds": round(time.perf_counter() - t0, 1), "final_loss": loss_ema,
                                       "iterations": cfg.iterations}


def person_groups(people: Sequence[str]) -> list[torch.Tensor]:
    """Indices of the photos of every person with more than one photo, people in sorted order. -> [idx [P_i]]"""
    arr = np.asarray(people)
    return [torch.from_numpy(np.flatnonzero(arr == p)) for p in sorted(set(people)) if (arr == p).sum() > 1]


def pull_people(generator, codes: torch.Tensor, images: torch.Tensor, people: Sequence[str], cfg: TrainConfig,
                log: Optional[Callable[[dict], None]] = None):
    """Stage 2: fine-tune the generator and codes [N, z_dim] on images [N, 3, R, R] while drawing the codes of
    each person with several photos to within ``cfg.pull_radius`` of their mean (penalty: squared excess
    distance, weight ``cfg.pull_weight``). Every batch holds one photo of such a person (round robin over the
    people), so their pulled codes keep fitting their photos. Without such a person (a run that leaves the only
    one out) the stage is the same fine-tune with no pull term, so such a model gets the same training steps.

    GLO alone gives every photo its own code: the four training photos of the GUIDE person ended 18-25 apart in
    z (any two people: 25), so a photo of them that the model never saw had no single place to go. -> (generator
    in eval mode with w_avg re-estimated, codes [N, z_dim], summary dict).
    """
    torch.set_num_threads(cfg.threads)
    groups = person_groups(people)
    if cfg.pull_iterations == 0:
        return generator, codes, {"pull_iterations": 0}
    generator.train()
    codes = torch.nn.Parameter(codes.detach().clone())
    opt = torch.optim.Adam([{"params": list(generator.parameters()), "lr": cfg.pull_lr},
                            {"params": [codes], "lr": cfg.pull_code_lr}], betas=cfg.betas)
    rng = torch.Generator().manual_seed(cfg.seed + 7)
    n, ema, t0 = images.shape[0], None, time.perf_counter()

    def spread() -> Optional[float]:
        return max((float(torch.pdist(codes.detach()[g]).max()) for g in groups), default=None)

    for step in range(cfg.pull_iterations):
        factor = 0.5 * (1 + math.cos(math.pi * step / cfg.pull_iterations))
        for group, base in zip(opt.param_groups, (cfg.pull_lr, cfg.pull_code_lr)):
            group["lr"] = base * factor
        idx = torch.randint(n, (cfg.batch,), generator=rng)
        if groups:
            person = groups[step % len(groups)]
            idx[0] = person[torch.randint(len(person), (1,), generator=rng)]
        z = codes[idx] + cfg.pull_code_noise * factor * torch.randn(cfg.batch, codes.shape[1], generator=rng)
        out = generator.synthesis(generator.mapping(z, None), noise_mode="const").images
        loss = multiscale_l1(out, images[idx], cfg.loss_scales, cfg.gradient_weight)
        pull = sum((torch.relu((codes[g] - codes[g].mean(0, keepdim=True)).norm(dim=1) - cfg.pull_radius)
                    .square().mean() for g in groups), loss.new_zeros(()))
        opt.zero_grad(set_to_none=True)
        (loss + cfg.pull_weight * pull).backward()
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.pull_iterations):
            log({"pull_step": step + 1, "loss": round(ema, 5), "pull": round(pull.item(), 5),
                 "largest_spread": _round(spread()), "seconds": round(time.perf_counter() - t0, 1)})
    generator.eval()
    estimate_w_avg(generator, seed=cfg.seed)
    return generator, codes.detach(), {"pull_iterations": cfg.pull_iterations, "pull_final_loss": ema,
                                       "pull_seconds": round(time.perf_counter() - t0, 1),
                                       "largest_person_spread": _round(spread())}


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def write_code_book(codes: torch.Tensor, images: torch.Tensor, landmarks: np.ndarray, path: Path,
                    dlib_weights: Optional[str] = None) -> Path:
    """The inverter's code book: codes [N, z_dim] with the dlib descriptor of each crop images [N, 3, R, R],
    its chip cut at the mean ``landmarks`` [N, 5, 2] (how the inverter will describe a new crop). -> path."""
    from guide_unlearn.adapters.projector.code_book import DLIB_DESCRIPTOR, CodeBook, dlib_crop_describer

    mean = np.asarray(landmarks, dtype=np.float64).mean(0)
    describe = dlib_crop_describer(mean, dlib_weights)
    book = CodeBook(codes, describe(images), describe, threshold=0.6, landmarks=mean, descriptor=DLIB_DESCRIPTOR)
    return book.save(path)


def export_model(generator, out_dir: Path, extra_files: Optional[dict[str, str]] = None) -> Path:
    """Write the diffusers-style folder (config.json + fp16 safetensors) atomically. -> out_dir."""
    import copy

    from guide_unlearn.lineage import save_generator

    model = copy.deepcopy(generator).to(torch.float16)
    # A re-run replaces the model folder of its own run folder (never a folder holding anything else).
    return save_generator(model, out_dir, overwrite=True, extra_files=extra_files)


def _face_set(path: Path, root: Path, names: Sequence[str], resolution: int):
    """The run's aligned photos: read from ``path`` when an earlier call of the run wrote it (ConfigError when
    it holds other photos than ``names``), else built from ``root`` and written there. -> FaceSet"""
    from .data import FaceSet, build_face_set

    if not path.exists():
        faces = build_face_set(root, names, resolution)
        faces.save(path)
        return faces
    faces = FaceSet.load(path)
    if sorted(faces.names + [name for name, _ in faces.skipped]) != sorted(names):
        raise ConfigError(f"{path} holds other photos than this command selects (another --exclude or "
                          "--max-photos); use a new --out folder")
    return faces


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: prepare the photos, train (stage 1), pull each person's codes together (stage 2), write
    the run folder: state, log, stage-1 codes, faces, and the model folder with its code book."""
    from .data import faces_root, leave_out, list_photos, read_people_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=Path(__file__).with_name("config.json"))
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed when it holds a state)")
    p.add_argument("--shared", type=Path, default=None, help="shared/ folder (default $GUIDE_SHARED or ../shared)")
    p.add_argument("--iterations", type=int, default=None, help="override the config (smoke runs)")
    p.add_argument("--pull-iterations", type=int, default=None, help="override the config's stage 2 (smoke runs)")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N photos (smoke runs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads instead of the config's (changes float rounding only; a resumed run may "
                        "use another count)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PERSON",
                   help="people to leave out (an oracle model): a one-person folder of shared/faces "
                        "(guide_celebahq512) or a photo that is its own person (deepface_train/img1.jpg)")
    p.add_argument("--exclude-file", type=Path, default=None,
                   help="a text file naming people to leave out, one per line (# comments), added to --exclude")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig.from_json(args.config, iterations=args.iterations, pull_iterations=args.pull_iterations,
                                threads=args.threads)
    people = list(args.exclude) + (read_people_file(args.exclude_file) if args.exclude_file else [])
    root = faces_root(args.shared)
    names, removed = leave_out(list_photos(root), people)  # validated before the run folder is touched
    names = names[: args.max_photos]
    args.out.mkdir(parents=True, exist_ok=True)
    faces = _face_set(args.out / "faces.npz", root, names, cfg.resolution)
    print(json.dumps({"photos": len(faces), "skipped": faces.skipped, "excluded": removed}), flush=True)
    log_file = (args.out / "log.jsonl").open("a")

    def log(rec: dict) -> None:
        line = json.dumps({**rec, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    generator, codes, summary = train(cfg, faces.images, args.out, log=log)
    from safetensors.torch import save_file

    save_file({"codes": codes.contiguous()}, str(args.out / "codes.safetensors"))
    generator, codes, pulled = pull_people(generator, codes, faces.images, faces.people, cfg, log=log)
    summary.update(pulled)
    export_model(generator, args.out / "model")
    from guide_unlearn.adapters.projector import CODE_BOOK_FILE

    write_code_book(codes, faces.images, faces.landmarks, args.out / "model" / CODE_BOOK_FILE)
    (args.out / "summary.json").write_text(json.dumps({**summary, "photos": len(faces), "excluded": removed,
                                                      "config": dataclasses.asdict(cfg)}, indent=1))
    print(json.dumps({"done": True, **summary}), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
