"""Golden data: the official implementations run on the CPU with seeded random weights (NOT run by CI).

For each network this library ports, this script builds the OFFICIAL network (imported from a checkout you point
it at; nothing official is copied into this repository) at a small but structurally complete configuration,
fills it with seeded random weights, saves it in the official file format where that is small enough (else as a
recipe, see golden_common.py), runs the official forward pass on fixed inputs and writes inputs and outputs to
tests/golden/data/<name>.safetensors plus <name>.json (configuration, commit, tensor recipe). The tests in this
folder load the same files with this library's loaders and compare.

Usage (every path is a plain checkout of the repository at the commit listed below; GOAE's config needs
``pip install yacs``):

    python tests/golden/make_goldens.py \\
        --stylegan2-ada ~/src/stylegan2-ada-pytorch --rosinality ~/src/stylegan2-pytorch --eg3d ~/src/eg3d \\
        --guide ~/src/GUIDE --e4e ~/src/encoder4editing --pytorch-fid ~/src/pytorch-fid \\
        [--only sg2_nvidia,eg3d,...] [--out tests/golden/data]

Commits the data in tests/golden/data was made from:

    NVlabs/stylegan2-ada-pytorch  d72cc7d041b42ec8e806021a205ed9349f87c6a4   (sg2_nvidia)
    rosinality/stylegan2-pytorch  bef283a1c24087da704d16c30abc8e36e63efa0e   (sg2_rosinality)
    NVlabs/eg3d                   7cf1fd1e99e1061e8b6ba850f91c94fe56e7afe4   (eg3d)
    KHU-AGI/GUIDE                 9cd9c9d9b4a1ef2958c7e48c8d5b0d7905e51007   (arcface_irse50, curricularface_ir101,
                                                                             goae, guide_unlearn_step)
    omertov/encoder4editing       99ea50578695d2e8a1cf7259d8ee89b23eea942b   (e4e)
    mseitzer/pytorch-fid          b9c18118d082cbd263c1b8963fc4221dc1cbb659   (fid_inception)

Each network is made in its own Python process (the NVIDIA repositories all have top-level packages called
``training``, ``torch_utils`` and ``dnnlib``). Shims, all in this script, none in the official code:

- ``torch.utils.cpp_extension.load`` is replaced by a stub before rosinality's / e4e's ``op`` package is imported
  (they compile CUDA kernels at import time); rosinality's code then takes its own CPU reference paths. e4e's copy
  of the ops has no CPU path: its package gets CPU forms (``e4e_cpu_ops``: the fused bias + leaky ReLU as the op
  defines it, and e4e's own reference ``upfirdn2d_native``). NVIDIA's custom ops fall back to their reference
  implementations on the CPU by themselves.
- stylegan2-ada-pytorch (at this commit) runs fp16 blocks in half precision even on the CPU: its synthesis is
  called with its own ``force_fp32=True``.
- EG3D's super-resolution widths (constants of SuperresolutionHybrid8XDC) are narrowed, see ``EG3D_SR_WIDTHS``.
- The ``module_src`` that NVIDIA's persistence pickles embed (the full source text of the defining file) is
  replaced by a one-line placeholder before pickling, so no official source text enters this repository. This
  library never executes module_src anyway.
- GOAE's Swin code creates one tensor with ``device="cuda"`` written out; its module sees a ``torch`` whose
  ``tensor()`` ignores the device (``cpu_only``).
- In the GUIDE step (``guide_unlearn_step``), the random draws of unlearn.py are fixed, see that function.

Runtime: about 5 minutes on one CPU thread; the largest process holds ~4 GB (e4e's 132 M-parameter recipe).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import golden_common as gc  # noqa: E402

COMMITS = {
    "stylegan2-ada": "d72cc7d041b42ec8e806021a205ed9349f87c6a4",
    "rosinality": "bef283a1c24087da704d16c30abc8e36e63efa0e",
    "eg3d": "7cf1fd1e99e1061e8b6ba850f91c94fe56e7afe4",
    "guide": "9cd9c9d9b4a1ef2958c7e48c8d5b0d7905e51007",
    "e4e": "99ea50578695d2e8a1cf7259d8ee89b23eea942b",
    "pytorch-fid": "b9c18118d082cbd263c1b8963fc4221dc1cbb659",
}
MODULE_SRC_PLACEHOLDER = ("# module source omitted: this golden file was written by tests/golden/make_goldens.py "
                          "from the official code, which is not redistributed here\n")
SEED = 26

PORTS: dict[str, tuple[str, Callable[[Path, Path], dict]]] = {}


def port(name: str, repo: str):
    """Register ``fn(checkout, out_dir) -> metadata`` as the maker of golden ``name`` from checkout ``repo``."""
    def register(fn):
        PORTS[name] = (repo, fn)
        return fn
    return register


# ----------------------------------------------------------------------------------------------------------------
# helpers


def strip_module_src(*nets: torch.nn.Module) -> None:
    """Replace the source text NVIDIA's persistence pickles embed by a placeholder (see the module docstring)."""
    for net in nets:
        for m in net.modules():
            if hasattr(type(m), "_orig_module_src"):
                type(m)._orig_module_src = MODULE_SRC_PLACEHOLDER


def perturb_nvidia(net: torch.nn.Module, seed: int) -> None:
    """Give NVIDIA's zero-initialised tensors (biases, noise strengths) seeded values so that every parameter
    changes the output: biases += N(0, 0.1²), noise strengths = N(0, 0.3²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("noise_strength"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def set_w_avg(mapping: torch.nn.Module, c: torch.Tensor | None, seed: int, n: int = 2048) -> None:
    """w_avg = the mean of ``n`` mapped codes (what a trained network's running average approximates)."""
    with torch.no_grad():
        z = gc.seeded([n, mapping.z_dim], seed)
        cc = None if c is None else c.expand(n, -1)
        mapping.w_avg.copy_(mapping(z, cc)[:, 0].mean(0))


def save(out: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Write <name>.safetensors and <name>.json into ``out``; -> meta."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


class _CpuTorch(types.ModuleType):
    """``torch`` as seen by a module that writes ``device="cuda"`` literally: every ``torch.tensor(...,
    device=...)`` is made on the CPU; everything else is torch itself."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def tensor(*args, **kwargs):
        kwargs.pop("device", None)
        return torch.tensor(*args, **kwargs)


def cpu_only(module: types.ModuleType) -> None:
    """Shim for official modules that create tensors on "cuda" by a literal (GOAE's Swin: the logit-scale
    clamp): their ``torch`` becomes :class:`_CpuTorch`."""
    module.torch = _CpuTorch()


def stub_cpp_extension() -> None:
    """rosinality's and e4e's ``op`` packages compile CUDA kernels when imported; there is nothing to compile on
    a CPU-only machine, and the CPU paths never call the compiled module."""
    import torch.utils.cpp_extension as ext

    ext.load = lambda *args, **kwargs: types.SimpleNamespace()


# ----------------------------------------------------------------------------------------------------------------
# StyleGAN2, NVIDIA layout (stylegan2-ada-pytorch)


@port("sg2_nvidia", "stylegan2-ada")
def sg2_nvidia(root: Path, out: Path) -> dict:
    """A 32² StyleGAN2 (2 mapping layers, 32 channels, 2 fp16 resolutions, a conv_clamp low enough to act) in
    the persistence pickle {G, D, G_ema, augment_pipe, training_set_kwargs}; mapping with and without truncation,
    synthesis with 'const', 'none' and seeded 'random' noise."""
    sys.path.insert(0, str(root))
    import dnnlib
    from training.networks import Discriminator, Generator

    torch.manual_seed(SEED)
    synthesis_kwargs = dict(channel_base=512, channel_max=32, num_fp16_res=2, conv_clamp=1.5)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs).eval()
    perturb_nvidia(G, SEED + 1)
    set_w_avg(G.mapping, None, SEED + 2)
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=32).eval()
    G_ema = copy.deepcopy(G)
    strip_module_src(G, D, G_ema)
    with open(out / "sg2_nvidia.pkl", "wb") as f:
        pickle.dump(dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                         training_set_kwargs=dnnlib.EasyDict(resolution=32, use_labels=False)), f)
    z = gc.seeded([3, 32], SEED + 3)
    with torch.no_grad():
        ws = G_ema.mapping(z, None)
        ws_trunc = G_ema.mapping(z, None, truncation_psi=0.6, truncation_cutoff=5)
        # force_fp32: at this commit the fp16 blocks would run in half precision even on the CPU; the fp32
        # network is the reference (fp16 is a GPU speed path this library does not reproduce).
        img_const = G_ema.synthesis(ws, noise_mode="const", force_fp32=True)
        img_none = G_ema.synthesis(ws_trunc, noise_mode="none", force_fp32=True)
        torch.manual_seed(SEED + 4)
        img_random = G_ema.synthesis(ws, noise_mode="random", force_fp32=True)
    tensors = dict(z=z, ws=ws, ws_trunc=ws_trunc, img_const=img_const, img_none=img_none, img_random=img_random)
    return save(out, "sg2_nvidia", tensors, dict(
        file="sg2_nvidia.pkl", truncation_psi=0.6, truncation_cutoff=5, random_noise_seed=SEED + 4,
        synthesis_kwargs=synthesis_kwargs))


# ----------------------------------------------------------------------------------------------------------------
# StyleGAN2, rosinality layout


ROSINALITY_RULES: gc.Rules = (
    (r"style\.\d+\.weight", ("normal", 0.0, 100.0)),  # EqualLinear with lr_mul 0.01 stores N(0, 1) / 0.01
    (r"style\.\d+\.bias", ("normal", 0.0, 10.0)),
    (r".*modulation\.bias", ("normal", 1.0, 0.1)),  # style affines start at 1
    (r".*noise\.weight", ("normal", 0.0, 0.3)),
    (r".*(blur|upsample)\.kernel", ("stored",)),  # FIR kernels: fixed buffers
    (r"noises\.noise_\d+", ("normal", 0.0, 1.0)),
    (r".*conv\.weight|input\.input|.*modulation\.weight", ("normal", 0.0, 1.0)),  # equalised lr: N(0, 1)
)


@port("sg2_rosinality", "rosinality")
def sg2_rosinality(root: Path, out: Path) -> dict:
    """rosinality's Generator(32, 64, n_mlp=2) (512 channels up to 32², as the official channel table), as a
    recipe (too large to store) saved by the test as {'g_ema', 'latent_avg'}; W codes, truncated codes and the
    image with the stored noise buffers and with seeded random noise."""
    stub_cpp_extension()
    sys.path.insert(0, str(root))
    from model import Generator

    g = Generator(32, 64, 2, channel_multiplier=2).eval()
    spec = gc.tensor_spec(g.state_dict(), ROSINALITY_RULES)
    stored = {k: v for k, v in g.state_dict().items() if k.endswith("kernel")}
    g.load_state_dict(gc.build_state(spec, SEED, stored), strict=True)
    z = gc.seeded([3, 64], SEED + 3)
    with torch.no_grad():
        latent_avg = g.mean_latent(4096)[0]
        ws = g.style(z)
        img_const, _ = g([z], randomize_noise=False)
        img_trunc, _ = g([z], truncation=0.6, truncation_latent=latent_avg[None], randomize_noise=False)
        torch.manual_seed(SEED + 4)
        img_random, _ = g([z], randomize_noise=True)
    tensors = dict(z=z, ws=ws, latent_avg=latent_avg, img_const=img_const, img_trunc=img_trunc,
                   img_random=img_random, **{f"stored.{k}": v for k, v in stored.items()})
    return save(out, "sg2_rosinality", tensors, dict(
        layout="torch.save({'g_ema': state_dict, 'latent_avg': [512]})", generator_args=[32, 64, 2],
        truncation_psi=0.6, random_noise_seed=SEED + 4, recipe_seed=SEED, tensors=spec,
        digest=gc.digest(g.state_dict())))


# ----------------------------------------------------------------------------------------------------------------
# EG3D (NVlabs/eg3d; the same network is rebuilt from GUIDE's copy of the EG3D code for the GUIDE step)

EG3D_RENDERING = dict(
    image_resolution=512, disparity_space_sampling=False, clamp_mode="softplus",
    superresolution_module="training.superresolution.SuperresolutionHybrid8XDC", c_gen_conditioning_zero=False,
    gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode="none", density_reg=0.25, density_reg_p_dist=0.004,
    reg_type="l1", decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=8, depth_resolution_importance=8,
    ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
EG3D_KWARGS = dict(z_dim=512, c_dim=25, w_dim=512, img_resolution=512, img_channels=3, sr_num_fp16_res=4,
                   mapping_kwargs=dict(num_layers=2), rendering_kwargs=EG3D_RENDERING,
                   sr_kwargs=dict(channel_base=4096, channel_max=32, fused_modconv_default="inference_only"),
                   channel_base=4096, channel_max=32, fused_modconv_default="inference_only", num_fp16_res=0,
                   conv_clamp=None)  # as eg3d's train.py sets them (g_num_fp16_res 0 -> conv_clamp None)
EG3D_NEURAL_RESOLUTION = 16
EG3D_SR_WIDTHS = {256: 16, 128: 8}
"""The super-resolution blocks' widths are constants of SuperresolutionHybrid8XDC (256 and 128 channels at 256²
and 512², ~100 GMAC per image): a shim narrows them to 16 and 8 so that a render takes under a second on one CPU
thread. Everything else about the module (resolutions, antialiased resize, clamping, the last-ws styles) is
official."""
EG3D_RULES: gc.Rules = (
    (r".*resample_filter|.*w_avg", ("keep",)),
    (r".*mapping\.fc\d+\.weight", ("normal", 0.0, 100.0)),  # lr_mul 0.01 stores N(0, 1) / 0.01
    (r".*affine\.bias", ("normal", 1.0, 0.1)),
    (r".*noise_strength", ("normal", 0.0, 0.3)),
    (r".*noise_const|.*\.const", ("normal", 0.0, 1.0)),
    (r".*\.weight", ("normal", 0.0, 1.0)),  # equalised learning rate everywhere: N(0, 1)
    (r".*\.bias", ("normal", 0.0, 0.1)),
)


def build_official_eg3d(seed: int = SEED):
    """The official TriPlaneGenerator of EG3D_KWARGS (from the ``training`` package on sys.path: EG3D's or
    GUIDE's copy) with the recipe weights and w_avg = the mean of mapped codes. -> (G, spec)."""
    import training.superresolution as sr
    from training.triplane import TriPlaneGenerator

    official_block = sr.SynthesisBlock

    def narrowed(in_channels, out_channels, *args, **kwargs):
        return official_block(EG3D_SR_WIDTHS.get(in_channels, in_channels),
                              EG3D_SR_WIDTHS.get(out_channels, out_channels), *args, **kwargs)

    sr.SynthesisBlock = narrowed  # shim (see EG3D_SR_WIDTHS); stays for later constructions in this process
    G = TriPlaneGenerator(**copy.deepcopy(EG3D_KWARGS)).eval().requires_grad_(False)
    G.neural_rendering_resolution = EG3D_NEURAL_RESOLUTION
    state = G.state_dict()
    spec = gc.tensor_spec(state, EG3D_RULES)
    made = gc.build_state(spec, seed)
    G.load_state_dict({**state, **made}, strict=True)
    cond = lookat_camera(root_module="camera_utils", yaw=torch.pi / 2, pitch=torch.pi / 2, pivot=[0, 0, 0.2])
    set_w_avg(_EG3DMapping(G), cond, seed + 2)
    return G, spec


class _EG3DMapping(torch.nn.Module):
    """G.mapping with the attributes set_w_avg needs (z_dim, w_avg)."""

    def __init__(self, G):
        super().__init__()
        self.G, self.z_dim, self.w_avg = G, G.z_dim, G.backbone.mapping.w_avg

    def forward(self, z, c):
        return self.G.mapping(z, c)


def lookat_camera(root_module: str, yaw: float, pitch: float, pivot, radius: float = 2.7,
                  fov: float = 18.837) -> torch.Tensor:
    """A 25-number EG3D camera made by the official camera_utils (LookAtPoseSampler + FOV_to_intrinsics)."""
    import importlib

    cu = importlib.import_module(root_module)
    pose = cu.LookAtPoseSampler.sample(yaw, pitch, torch.tensor(pivot, dtype=torch.float32), radius=radius)
    return torch.cat([pose.reshape(-1, 16), cu.FOV_to_intrinsics(fov).reshape(-1, 9)], dim=1)


def subsample(t: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th pixel of an image batch [N, C, H, W] (large outputs are stored this way)."""
    return t[..., ::stride, ::stride].contiguous()


@port("eg3d", "eg3d")
def eg3d(root: Path, out: Path) -> dict:
    """The tiny EG3D in the persistence pickle {'G_ema'}: cameras, mapping (plain / truncated), tri-planes, raw
    image, depth and super-resolved image for 2 codes at 2 cameras, with const noise and with seeded random noise
    (the renderer's jitter and importance draws come from torch's global generator seeded before the call)."""
    sys.path.insert(0, str(root / "eg3d"))
    G, spec = build_official_eg3d()
    strip_module_src(G)
    with open(out / "eg3d.pkl", "wb") as f:
        pickle.dump({"G_ema": G}, f)
    half_pi = torch.pi / 2
    angles = [(half_pi, half_pi), (half_pi + 0.2, half_pi - 0.2), (half_pi - 0.15, half_pi + 0.1)]
    cams = {f"cam{i}": lookat_camera("camera_utils", y, p, [0, 0, 0.2]) for i, (y, p) in enumerate(angles)}
    cams["cam1_pivot0"] = lookat_camera("camera_utils", *angles[1], [0, 0, 0])  # GUIDE code's pivot
    c_cond = cams["cam0"].expand(2, -1)
    c_render = torch.cat([cams["cam1"], cams["cam2"]])
    z = gc.seeded([2, 512], SEED + 3)
    tensors: dict[str, torch.Tensor] = dict(z=z, c_render=c_render, **cams)
    checksums = {}
    with torch.no_grad():
        ws = G.mapping(z, c_cond)
        tensors.update(ws=ws, ws_trunc=G.mapping(z, c_cond, truncation_psi=0.7, truncation_cutoff=10))
        planes = G.backbone.synthesis(ws, noise_mode="const")
        tensors.update(planes_sub=subsample(planes, 8))
        checksums["planes"] = gc.checksum(planes)
        for mode, seed in (("const", SEED + 5), ("random", SEED + 6)):
            torch.manual_seed(seed)
            res = G.synthesis(ws, c_render, noise_mode=mode)
            tensors.update({f"{mode}.image_raw": res["image_raw"], f"{mode}.image_depth": res["image_depth"],
                            f"{mode}.image_sub": subsample(res["image"], 4)})
            checksums[f"{mode}.image"] = gc.checksum(res["image"])
    return save(out, "eg3d", tensors, dict(
        file="eg3d.pkl", init_kwargs=EG3D_KWARGS, neural_rendering_resolution=EG3D_NEURAL_RESOLUTION,
        sr_widths_shim=EG3D_SR_WIDTHS, camera_angles=angles, truncation_psi=0.7, truncation_cutoff=10,
        render_seeds={"const": SEED + 5, "random": SEED + 6}, subsample={"planes": 8, "image": 4},
        checksums=checksums,
        recipe_seed=SEED, tensors=spec, digest=gc.digest(G.state_dict())))


# ----------------------------------------------------------------------------------------------------------------
# Face identity networks (GUIDE's arcface.py: ArcFace IR-SE50 of the ID loss, CurricularFace IR-101 of the metric)

IR_RULES: gc.Rules = (
    *gc.BATCHNORM_RULES,
    (r"(.*\.)?(input_layer\.2|res_layer\.2)\.weight", ("normal", 0.25, 0.05)),  # PReLU slopes
)
ARCFACE_SEED = SEED + 100


def arcface_state(backbone: torch.nn.Module) -> tuple[dict, list]:
    """The recipe state of an official IR backbone: (state dict, spec)."""
    spec = gc.tensor_spec(backbone.state_dict(), IR_RULES)
    return gc.build_state(spec, ARCFACE_SEED), spec


@port("arcface_irse50", "guide")
def arcface_irse50(root: Path, out: Path) -> dict:
    """IR-SE50 as GUIDE's IDLoss builds it (model_ir_se50.pth layout, a raw state dict): embeddings of 112²
    crops, and IDLoss.extract_feats of 512² renders (resize to 256, crop [35:223, 32:220], pool to 112)."""
    sys.path.insert(0, str(root))
    from arcface import Backbone

    net = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se").eval()
    state, spec = arcface_state(net)
    net.load_state_dict(state, strict=True)
    crops = gc.seeded([2, 3, 112, 112], SEED + 7, "uniform") * 2 - 1
    renders = gc.seeded([2, 3, 512, 512], SEED + 8, "uniform") * 2 - 1  # not stored: the test redraws them
    with torch.no_grad():
        emb = net(crops)
        x = torch.nn.functional.interpolate(renders, (256, 256), mode="bilinear")  # IDLoss.extract_feats
        emb_renders = net(torch.nn.functional.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], (112, 112)))
    return save(out, "arcface_irse50", dict(crops=crops, emb=emb, emb_renders=emb_renders), dict(
        layout="raw state dict (model_ir_se50.pth)", recipe_seed=ARCFACE_SEED, tensors=spec,
        digest=gc.digest(state), renders_seed=SEED + 8, renders_checksum=gc.checksum(renders)))


@port("curricularface_ir101", "guide")
def curricularface_ir101(root: Path, out: Path) -> dict:
    """IR-101 as GUIDE's id_sim.py builds it (arcface.IR_101: 'ir' units, BatchNorm1d without affine;
    CurricularFace_Backbone.pth layout): embeddings of 112² crops in [-1, 1]."""
    sys.path.insert(0, str(root))
    from arcface import IR_101

    net = IR_101(112).eval()
    spec = gc.tensor_spec(net.state_dict(), IR_RULES)
    state = gc.build_state(spec, SEED + 101)
    net.load_state_dict(state, strict=True)
    crops = gc.seeded([2, 3, 112, 112], SEED + 9, "uniform") * 2 - 1
    with torch.no_grad():
        emb = net(crops)
    return save(out, "curricularface_ir101", dict(crops=crops, emb=emb), dict(
        layout="raw state dict (CurricularFace_Backbone.pth)", recipe_seed=SEED + 101, tensors=spec,
        digest=gc.digest(state)))


# ----------------------------------------------------------------------------------------------------------------
# FID Inception (pytorch-fid)


@port("fid_inception", "pytorch-fid")
def fid_inception(root: Path, out: Path) -> dict:
    """pytorch-fid's InceptionV3([pool3]) with the FID weights file replaced by the recipe (pre-placed where
    torch's hub loader finds pt_inception-2015-12-05-6726825d.pth): 2048-d features of images in [0, 1] at 64²
    (resized to 299 by the network) and at 299²."""
    sys.path.insert(0, str(root / "src"))
    hub = Path(os.environ["GOLDEN_SCRATCH"]) / "torch_home"
    os.environ["TORCH_HOME"] = str(hub)
    from pytorch_fid import inception as fid

    skeleton = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in (("Mixed_5b", fid.FIDInceptionA(192, 32)), ("Mixed_5c", fid.FIDInceptionA(256, 64)),
                        ("Mixed_5d", fid.FIDInceptionA(288, 64)), ("Mixed_6b", fid.FIDInceptionC(768, 128)),
                        ("Mixed_6c", fid.FIDInceptionC(768, 160)), ("Mixed_6d", fid.FIDInceptionC(768, 160)),
                        ("Mixed_6e", fid.FIDInceptionC(768, 192)), ("Mixed_7b", fid.FIDInceptionE_1(1280)),
                        ("Mixed_7c", fid.FIDInceptionE_2(2048))):
        setattr(skeleton, name, block)
    spec = gc.tensor_spec(skeleton.state_dict(), gc.BATCHNORM_RULES)
    state = gc.build_state(spec, SEED + 200)
    (hub / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, hub / "hub" / "checkpoints" / fid.FID_WEIGHTS_URL.rsplit("/", 1)[1])
    net = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # loads the file above
    small = gc.seeded([2, 3, 64, 64], SEED + 10, "uniform")
    full = gc.seeded([1, 3, 299, 299], SEED + 11, "uniform")  # not stored: the test redraws it
    with torch.no_grad():
        feat_small = net(small)[0].flatten(1)
        feat_full = net(full)[0].flatten(1)
    return save(out, "fid_inception", dict(small=small, feat_small=feat_small, feat_full=feat_full), dict(
        layout="raw state dict (pt_inception-2015-12-05-6726825d.pth)", recipe_seed=SEED + 200, tensors=spec,
        digest=gc.digest(state), full_seed=SEED + 11, full_checksum=gc.checksum(full)))


# ----------------------------------------------------------------------------------------------------------------
# e4e (encoder4editing)


def e4e_cpu_ops() -> None:
    """e4e's copy of rosinality's ops has no CPU path: give its ``op`` package CPU forms (the fused bias + leaky
    ReLU as documented by the op, and e4e's own reference ``upfirdn2d_native``)."""
    stub_cpp_extension()
    import torch.nn.functional as F
    import models.stylegan2.op as op

    fused_act = sys.modules["models.stylegan2.op.fused_act"]  # the package re-exports functions of these names
    fir = sys.modules["models.stylegan2.op.upfirdn2d"]
    fir.F = F  # its reference function uses F without importing it (it is never called on the GPU path)

    def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
        return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), negative_slope) * scale

    def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        n, c, h, w = x.shape
        y = fir.upfirdn2d_native(x.reshape(-1, h, w, 1), kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])
        return y.reshape(n, c, y.shape[1], y.shape[2])

    fused_act.fused_leaky_relu = op.fused_leaky_relu = fused_leaky_relu
    fir.upfirdn2d = op.upfirdn2d = upfirdn2d


E4E_RULES: gc.Rules = (
    *gc.BATCHNORM_RULES,
    (r"encoder\.(input_layer\.2|body\.\d+\.res_layer\.2)\.weight", ("normal", 0.25, 0.05)),  # PReLU slopes
    (r"encoder\.styles\.\d+\.linear\.weight", ("normal", 0.0, 1.0)),  # EqualLinear stores N(0, 1)
    *((r"decoder\." + pattern, rule) for pattern, rule in ROSINALITY_RULES),
)
E4E_SIZE = 32  # stylegan_size: 8 codes, so the coarse (3), middle (4) and fine (1) heads all exist


@port("e4e", "e4e")
def e4e(root: Path, out: Path) -> dict:
    """An e4e checkpoint {'state_dict', 'opts', 'latent_avg'} for stylegan_size 32 (the encoder at full width,
    8 style heads; the decoder is e4e's rosinality generator), as a recipe; codes of fixed 256² images by the
    official inference path (pSp(opts) loading the file, net(x, randomize_noise=False, return_latents=True)),
    and the decoder's image of those codes."""
    sys.path.insert(0, str(root))
    e4e_cpu_ops()
    from argparse import Namespace

    from models.encoders.psp_encoders import Encoder4Editing
    from models.psp import pSp
    from models.stylegan2.model import Generator

    opts = dict(exp_dir="", dataset_type="ffhq_encode", encoder_type="Encoder4Editing", batch_size=8,
                learning_rate=0.0001, optim_name="ranger", train_decoder=False, start_from_latent_avg=True,
                lpips_type="alex", lpips_lambda=0.8, id_lambda=0.1, l2_lambda=1.0, stylegan_size=E4E_SIZE,
                stylegan_weights="", checkpoint_path=None, max_steps=200000, save_interval=None,
                progressive_steps=[0, 20000, 22000], delta_norm=2, delta_norm_lambda=0.0002, device="cpu")
    file = Path(os.environ["GOLDEN_SCRATCH"]) / "e4e_golden.pt"
    # pSp's own modules (pSp(opts) without a checkpoint would read ImageNet / FFHQ files): state_dict() of pSp is
    # exactly these two under 'encoder.' and 'decoder.'
    encoder = Encoder4Editing(50, "ir_se", Namespace(**opts))
    decoder = Generator(E4E_SIZE, 512, 8, channel_multiplier=2)
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"decoder.{k}": v for k, v in decoder.state_dict().items()}}
    spec = gc.tensor_spec(state, E4E_RULES)
    stored = {k: v for k, v in state.items() if k.endswith("kernel")}
    state = gc.build_state(spec, SEED + 300, stored)
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    with torch.no_grad():
        latent_avg = decoder.mean_latent(4096).repeat(encoder.style_count, 1)
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, file)
    # inference exactly as e4e's scripts/inference.py: opts from the file, checkpoint_path pointing at it
    ckpt = torch.load(file, map_location="cpu")
    net = pSp(Namespace(**dict(ckpt["opts"], checkpoint_path=str(file)))).eval()
    x = gc.seeded([2, 3, 256, 256], SEED + 12, "uniform") * 2 - 1
    with torch.no_grad():
        _, codes = net(x, randomize_noise=False, return_latents=True)
        image, _ = net.decoder([codes], input_is_latent=True, randomize_noise=False)
    return save(out, "e4e", dict(codes=codes, image=image, latent_avg=latent_avg,
                                 **{f"stored.{k}": v for k, v in stored.items()}), dict(
        layout="torch.save({'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict, 'latent_avg': [8, 512]})",
        opts=opts, recipe_seed=SEED + 300, tensors=spec, digest=gc.digest(state), images_seed=SEED + 12,
        images_checksum=gc.checksum(x)))


# ----------------------------------------------------------------------------------------------------------------
# GOAE (GUIDE's goae package: GOAEncoder on a Swin Transformer V2)

GOAE_RULES: gc.Rules = (
    (r".*attn\.(relative_coords_table|relative_position_index)|.*attn_mask", ("keep",)),
    (r".*logit_scale", ("normal", 2.3, 0.1)),  # log(10) at initialisation
)


@port("goae", "guide")
def goae(root: Path, out: Path) -> dict:
    """GUIDE's GOAEncoder(get_config(), mlp_layer=2) as unlearn.py builds it, as a recipe in the encoder_FFHQ.pt
    layout (raw state dict): offsets w [N, 14, 512] of fixed 256² images in [-1, 1] in eval mode, and in train
    mode (as unlearn.py runs it) from a known seed. The buffers the Swin blocks compute themselves are recorded as
    checksums."""
    sys.path.insert(0, str(root))
    os.chdir(root)  # get_config reads goae/swinv2.yaml relative to the working folder
    from goae import GOAEncoder
    from goae.swin_config import get_config

    cpu_only(sys.modules["goae.swin_transformer"])
    enc = GOAEncoder(swin_config=get_config(), mlp_layer=2, stage_list=[10000, 20000, 30000]).eval()
    spec = gc.tensor_spec(enc.state_dict(), GOAE_RULES)
    made = gc.build_state(spec, SEED + 400)
    enc.load_state_dict({**enc.state_dict(), **made}, strict=True)
    kept = {item["name"]: gc.checksum(enc.state_dict()[item["name"]]) for item in spec if item["rule"][0] == "keep"}
    x = gc.seeded([2, 3, 256, 256], SEED + 13, "uniform") * 2 - 1
    # unlearn.py never calls eval(): its inversion runs with dropout and stochastic depth. Recorded with the seed
    # that this library's GOAEInverter(official_train_mode=True).invert(x, generator) takes from
    # torch.Generator().manual_seed(SEED + 14) (one randint draw), so the test can call the public API.
    train_seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(SEED + 14)).item())
    with torch.no_grad():
        w, w_base = enc(x)
        torch.manual_seed(train_seed)
        w_train = enc.train()(x)[0]
    return save(out, "goae", dict(w=w, w_base=w_base, w_train=w_train), dict(
        layout="raw state dict (encoder_FFHQ.pt)", recipe_seed=SEED + 400, tensors=spec, kept_checksums=kept,
        digest=gc.digest(made), images_seed=SEED + 13, images_checksum=gc.checksum(x),
        train_mode_generator_seed=SEED + 14))


# ----------------------------------------------------------------------------------------------------------------
# One iteration of GUIDE's unlearn.py on the tiny EG3D

LPIPS_RULES: gc.Rules = (
    (r"scaling_layer\..*", ("keep",)),
    (r"lin\d\.model\.1\.weight", ("uniform", 0.0, 0.1)),  # LPIPS's linear heads are non-negative
)
GUIDE_STEP = dict(angle_seed=SEED + 20, alpha_seed=SEED + 21, z_seed=SEED + 22, w_u_seed=SEED + 23,
                  lpips_seed=SEED + 500)


def lpips_network(net: str = "alex"):
    """The LPIPS of both sides of the GUIDE step: ``lpips.LPIPS(net, pnet_rand=True)`` with the recipe weights
    (LPIPS-VGG would need torchvision's ImageNet weights and costs ~9 s per 512² pair on one CPU thread)."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    spec = gc.tensor_spec(model.state_dict(), LPIPS_RULES)
    model.load_state_dict({**model.state_dict(), **gc.build_state(spec, GUIDE_STEP["lpips_seed"])})
    return model.eval(), spec


GUIDE_ITERATIONS = 2
"""Two iterations: the first is THE iteration (each term and the update after one Adam step); in it G_u = G_s, so
L_global is exactly 0, and the second iteration is where L_global has a value to compare."""


def guide_step_draws() -> dict[str, torch.Tensor]:
    """The random samples of the iterations, fixed: per iteration the camera yaw offset and 2 + 2 latent z
    (adjacency, then global); ONE adjacency alpha used by every adjacency sample (this library draws
    alpha ~ U(lo, hi) and is given lo = hi)."""
    yaw = (gc.seeded([GUIDE_ITERATIONS], GUIDE_STEP["angle_seed"], "uniform") * 2 - 1) * (torch.pi / 12)
    alpha = gc.seeded([1], GUIDE_STEP["alpha_seed"], "uniform") * 15
    return dict(angle_y=yaw.double(), alpha=alpha.double(),
                z=gc.seeded([GUIDE_ITERATIONS * 4, 512], GUIDE_STEP["z_seed"]))


class _Delegating(types.ModuleType):
    """A stand-in module: what it does not define comes from ``base``."""

    def __init__(self, name: str, base: Any):
        super().__init__(name)
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)


class _FixedTorch(_Delegating):
    """unlearn.py's ``torch``: the CPU for ``torch.device("cuda")``; ``torch.randn`` hands out the fixed z."""

    def __init__(self, z_queue: list):
        super().__init__("torch", torch)
        self._z = z_queue

    def device(self, *args, **kwargs):
        return torch.device("cpu")

    def randn(self, *shape, **kwargs):
        return self._z.pop(0).reshape(shape).clone()


class _FixedRandom(_Delegating):
    """unlearn.py's ``np.random``: ``uniform`` hands out the fixed yaw / alpha values in the order drawn."""

    def __init__(self, values: list):
        import numpy as np

        super().__init__("numpy.random", np.random)
        self._values = values

    def uniform(self, low=0.0, high=1.0, size=None):
        import numpy as np

        value = self._values.pop(0)
        return value if size is None else np.full(size, value)


class _RecordingFunctional(_Delegating):
    """unlearn.py's ``F``: records every ``mse_loss``."""

    def __init__(self, values: list):
        super().__init__("torch.nn.functional", torch.nn.functional)
        self._values = values

    def mse_loss(self, a, b):
        out = torch.nn.functional.mse_loss(a, b)
        self._values.append(float(out.detach()))
        return out


class _RecordingLpips(torch.nn.Module):
    """LPIPS that records the mean of every call."""

    def __init__(self, model, values: list):
        super().__init__()
        self.model, self.values = model, values

    def forward(self, a, b):
        out = self.model(a, b)
        self.values.append(float(out.detach().mean()))
        return out


class _Recorder:
    """Replaces what unlearn.py imported (torch, np, F, optim, lpips, tqdm, IDLoss) inside its namespace only:
    the fixed draws are handed out, everything runs on the CPU, and every loss term, each Adam step's parameters
    and the first step's gradients are recorded."""

    def __init__(self, unlearn, draws: dict[str, torch.Tensor]):
        import numpy as np

        self.terms: dict[str, list[float]] = {"mse": [], "lpips": [], "id": []}
        self.postfix: list[dict[str, float]] = []
        self.after_step: list[list[torch.Tensor]] = []
        self.grads: list = []
        alpha = float(draws["alpha"])
        unlearn.torch = _FixedTorch(list(draws["z"].split(1)))
        unlearn.np = _Delegating("numpy", np)
        unlearn.np.random = _FixedRandom([v for yaw in draws["angle_y"].tolist() for v in (yaw, alpha, alpha)])
        unlearn.F = _RecordingFunctional(self.terms["mse"])
        unlearn.optim = types.SimpleNamespace(Adam=self._adam())
        unlearn.lpips = types.SimpleNamespace(LPIPS=lambda net="vgg": _RecordingLpips(lpips_network("alex")[0],
                                                                                       self.terms["lpips"]))
        unlearn.tqdm = self._bar()
        unlearn.IDLoss = self._id_loss(unlearn.IDLoss)

    def _adam(self):
        rec = self

        class Adam(torch.optim.Adam):
            def step(self, *args, **kwargs):
                out = super().step(*args, **kwargs)
                params = self.param_groups[0]["params"]
                rec.after_step.append([p.detach().clone() for p in params])
                if len(rec.after_step) == 1:  # after the first step exp_avg = (1 - beta1) * gradient
                    rec.grads = [self.state[p]["exp_avg"] / 0.1 if p in self.state else None for p in params]
                return out

        return Adam

    def _bar(self):
        rec = self

        class Bar:
            def __init__(self, iterable):
                self.iterable = iterable

            def __iter__(self):
                return iter(self.iterable)

            def set_postfix(self, **values):
                rec.postfix.append({k: float(v) for k, v in values.items()})

        return Bar

    def _id_loss(self, official):
        values = self.terms["id"]

        class IDLoss(official):
            def forward(self, a, b):
                out = super().forward(a, b)
                values.append(float(out.detach()))
                return out

        return IDLoss


def _guide_fix_randomness(G_class) -> None:
    """Noise: every synthesis and get_planes call of unlearn.py runs with noise_mode 'const' (each layer's stored
    noise, the same on both sides). Renderer: its U[0, 1) draws become golden_common.fixed_uniform."""
    import training.volumetric_rendering.renderer as renderer

    synthesis, get_planes = G_class.synthesis, G_class.get_planes
    G_class.synthesis = lambda self, ws, c, *a, **k: synthesis(self, ws, c, *a, **dict(k, noise_mode="const"))
    G_class.get_planes = lambda self, ws, **k: get_planes(self, ws, **dict(k, noise_mode="const"))

    class Torch(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        rand_like = staticmethod(lambda t, **k: gc.fixed_uniform(t.shape, t.dtype, t.device))
        rand = staticmethod(lambda *shape, device=None, **k: gc.fixed_uniform(shape, device=device))

    renderer.torch = Torch("torch")


@port("guide_unlearn_step", "guide")
def guide_unlearn_step(root: Path, out: Path) -> dict:
    """ONE iteration of GUIDE's unlearn.py (``--local --adj --glob``, UFO target 'extra' at d = 30, lr 1e-4) on
    the golden EG3D rebuilt from GUIDE's copy of the EG3D code (same recipe, same digest), with its random
    samples fixed (guide_step_draws, _guide_fix_randomness), LPIPS and ArcFace on recipe weights (lpips_network;
    model_ir_se50.pth from the arcface_irse50 recipe). unlearn.py itself runs unchanged through its click
    command's callback (with --iter 2, see GUIDE_ITERATIONS); what it imported is replaced by recording proxies
    (_Recorder). Records every loss term, the UFO target, the update of every trained parameter after each Adam
    step and the first step's gradient."""
    sys.path.insert(0, str(root))
    run_dir = Path(os.environ["GOLDEN_SCRATCH"]) / "guide_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)  # unlearn.py reads its files from, and writes experiments/ into, the working folder
    G, spec = build_official_eg3d()
    with open("eg3d_tiny.pkl", "wb") as f:
        pickle.dump({"G_ema": G}, f)  # with its module_src: unlearn.py loads it with the official legacy loader
    torch.save(G.backbone.mapping.w_avg.detach().repeat(14, 1), "w_avg_ffhqrebalanced512-128.pt")
    from arcface import Backbone

    torch.save(arcface_state(Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se"))[0],
               "model_ir_se50.pth")
    draws = guide_step_draws()
    w_u = (G.backbone.mapping.w_avg + gc.seeded([1, 14, 512], GUIDE_STEP["w_u_seed"]) * 0.5).detach()
    torch.save(w_u, "w_u.pt")
    import training.triplane as triplane
    import unlearn

    _guide_fix_randomness(triplane.TriPlaneGenerator)
    rec = _Recorder(unlearn, draws)
    kwargs = {p.name: p.default for p in unlearn.unlearn.params}
    kwargs.update(pretrained_ckpt="eg3d_tiny.pkl", iter=GUIDE_ITERATIONS, seed=0, exp="golden", inversion=None,
                  inversion_image_path="w_u.pt", local=True, adj=True, glob=True)
    before = [p.detach().clone() for p in G.parameters()]
    unlearn.unlearn.callback(**kwargs)
    tensors = {}
    for i, (name, _) in enumerate(G.named_parameters()):
        if rec.grads[i] is None:
            continue
        for step, after in enumerate(rec.after_step, 1):
            tensors[f"delta{step}.{name}"] = after[i] - before[i]
        tensors[f"grad1.{name}"] = rec.grads[i].to(torch.bfloat16)  # used as a mask only: 3 digits suffice
    w_avg = G.backbone.mapping.w_avg.detach()
    w_id = w_u - w_avg
    return save(out, "guide_unlearn_step", dict(w_u=w_u, w_target_official=w_avg - w_id / w_id.norm(p=2) * 30.0,
                                                **{k: v for k, v in draws.items()}, **tensors), dict(
        unlearn_options={k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))},
        terms=rec.terms, postfix=rec.postfix, eg3d_digest=gc.digest(G.state_dict()), lpips_net="alex",
        lpips_seed=GUIDE_STEP["lpips_seed"], lpips_tensors=lpips_network("alex")[1], arcface_seed=ARCFACE_SEED,
        trained=sorted(k[len("delta1."):] for k in tensors if k.startswith("delta1.")), lr=kwargs["lr"],
        iterations=GUIDE_ITERATIONS, fixed_randomness="noise_mode const; renderer draws golden_common.fixed_uniform"))


# ----------------------------------------------------------------------------------------------------------------
# driver


def _commit_of(root: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def run_worker(name: str, root: Path, out: Path) -> None:
    repo, fn = PORTS[name]
    torch.set_num_threads(max(1, int(os.environ.get("GOLDEN_THREADS", "1"))))
    meta = fn(root, out)
    found = _commit_of(root)
    meta.update(repository=repo, commit=COMMITS[repo], checkout_commit=found or "not a git checkout (unverified)",
                torch=torch.__version__, seed=SEED)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"{name}: written to {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for repo in COMMITS:
        parser.add_argument(f"--{repo}", type=Path, help=f"checkout of {repo} at {COMMITS[repo]}")
    parser.add_argument("--only", default="", help="comma-separated golden names (default: all with a checkout)")
    parser.add_argument("--out", type=Path, default=gc.DATA)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        run_worker(args.worker, args.checkout, args.out)
        return 0
    wanted = [n for n in (args.only.split(",") if args.only else PORTS) if n]
    failed = []
    scratch = Path(tempfile.mkdtemp(prefix="goldens-"))  # official files that must sit where official code looks
    os.environ["GOLDEN_SCRATCH"] = str(scratch)
    for name in wanted:
        repo = PORTS[name][0]
        root = getattr(args, repo.replace("-", "_"))
        if root is None:
            print(f"{name}: skipped (no --{repo})")
            continue
        cmd = [sys.executable, __file__, "--worker", name, "--checkout", str(root), "--out", str(args.out)]
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print("FAILED:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
