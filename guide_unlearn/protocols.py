"""The small protocols the core method depends on. Nothing concrete lives here.

A backend (``guide_unlearn.adapters.*``) implements these; the core (targets, losses, the erase loop,
patches) only ever talks to them, so a new generator family or face network is an adapter, not a rewrite.

Conventions: images are float tensors [N, 3, H, W] in [-1, 1]; latent codes ``ws`` are [N, num_ws, w_dim];
cameras, where a model has them, are [N, c_dim] float tensors (EG3D: 25 numbers, see docs/eg3d.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import nn


@dataclass
class SynthesisOutput:
    """What a generator renders for a batch of codes.

    images:   [N, 3, H, W] in [-1, 1].
    features: the intermediate tensor of the L2 term (EG3D: tri-planes [N, 3, 32, 256, 256]; StyleGAN2: the
              last synthesis feature map [N, C, R, R]); None when not requested.
    """

    images: torch.Tensor
    features: Optional[torch.Tensor] = None


@runtime_checkable
class GeneratorAdapter(Protocol):
    """A pretrained generator G seen by the erase loop. Implementations are ``nn.Module`` s.

    The module's parameters are what a patch changes; ``lora_target_modules()`` names the layers a LoRA may
    wrap (each is an instance of one of ``lora_layer_types()`` and accepts ``weight_delta=`` in forward).
    """

    family: str  # "stylegan2", "eg3d", ... (recorded in patches)
    z_dim: int
    w_dim: int
    num_ws: int
    c_dim: int  # 0 when the model has no camera

    @property
    def w_avg(self) -> torch.Tensor:
        """Mean intermediate latent [w_dim]."""

    @property
    def config(self) -> Any:
        """JSON-serialisable constructor configuration (a diffusers FrozenDict)."""

    def mapping(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        """z [N, z_dim] (+ conditioning camera [N, c_dim]; None = the model's default) -> ws [N, num_ws, w_dim]."""

    def synthesis(self, ws: torch.Tensor, c: Optional[torch.Tensor] = None, noise_mode: str = "random",
                  generator: Optional[torch.Generator] = None, return_features: bool = False) -> SynthesisOutput:
        """ws [N, num_ws, w_dim] (+ rendering camera [N, c_dim]) -> SynthesisOutput (images in [-1, 1])."""

    def sample_cameras(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """Training-time rendering cameras [n, c_dim] (GUIDE's yaw/pitch distribution); None without cameras."""

    def evaluation_cameras(self, n_views: int = 11) -> Optional[torch.Tensor]:
        """A fixed orbit of ``n_views`` rendering cameras [n_views, c_dim]; None without cameras."""

    def lora_layer_types(self) -> tuple[type, ...]:
        """Layer classes a weight-space LoRA can wrap (their forward accepts ``weight_delta``)."""

    def lora_target_modules(self) -> list[str]:
        """Default module names (``named_modules`` keys) a LoRA forget patch wraps."""

    def full_finetune_parameters(self) -> list[str]:
        """Parameter names the ``paper`` preset trains (GUIDE: everything under the synthesis network)."""

    def default_target_distance(self) -> tuple[float, bool]:
        """(distance, relative): the UFO distance the backend recommends; relative = in units of the typical
        ||w - w_avg|| of mapped samples (see ``guide_unlearn.targets.typical_distance``)."""


@runtime_checkable
class Inverter(Protocol):
    """Maps aligned images to latent codes of a given generator."""

    input_alignment: str  # the ``guide_unlearn.faces.align_face`` style its input must have ("ffhq", "eg3d")

    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (+ their cameras [N, c_dim]) -> ws [N, num_ws, w_dim]."""


@runtime_checkable
class IdentityModel(Protocol):
    """A face-recognition network: images -> unit identity vectors."""

    name: str
    align_style: str  # the alignment its input must have ("arcface", "ffhq", "dlib150", ...)
    differentiable: bool  # usable as a training loss?

    def embed(self, images: torch.Tensor | Sequence[Any]) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (or a list of PIL images aligned per ``align_style``) -> [N, D],
        L2-normalised."""


@runtime_checkable
class PerceptualDistance(Protocol):
    """A perceptual image distance (LPIPS, or a labelled offline stand-in)."""

    name: str  # recorded in patch metadata; never "lpips-*" unless it runs on trained weights
    is_learned: bool  # True for LPIPS with its trained backbone

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b [N, 3, H, W] in [-1, 1] -> distances [N]."""


@dataclass
class Recognition:
    """What an identity judge said about N codes, each rendered and compared with its person's photos.

    score:      [N] float64, the closest match on the judge's rule's measure (distance or cosine) over the views
                and the person's photos; NaN where no view has a face.
    cosine:     [N] float64, the highest cosine of normalised identity vectors, likewise.
    face:       [N] bool, a face was found in at least one view.
    recognised: [N] bool, at least one view is the same person under the judge's rule (no face: never).
    views:      renderings per code (1 for a 2D model).
    """

    score: torch.Tensor
    cosine: torch.Tensor
    face: torch.Tensor
    recognised: torch.Tensor
    views: int = 1


@runtime_checkable
class PersonJudge(Protocol):
    """Decides whether codes render as the person(s) of an erase request: a face-recognition network and its
    same-person rule, bound by the caller (a pipeline) to the request's photos. The core only calls it; it never
    imports a concrete judge.

    Row ``i`` of a request is its i-th code (photo); the judge knows whose photo each row is and, for a 2D model,
    where the face sits in it (renderings are cut there), and for a camera model which views to render.
    """

    name: str  # the identity network, as recorded in verdicts and patch metadata
    rule: Any  # its same-person rule: ``metric`` ("euclidean" | "cosine"), ``cut``, ``to_dict()`` (the audit's
    #            SamePersonRule, guide_unlearn/pipelines/audit/rule.py)

    def recognise(self, ws: torch.Tensor, rows: torch.Tensor) -> Recognition:
        """codes ws [N, num_ws, w_dim], each standing for request row rows[n] (long [N]), rendered by the generator
        AS IT IS NOW (patches applied or not) -> :class:`Recognition` of N codes, against row n's person."""


def module_of(adapter: GeneratorAdapter) -> nn.Module:
    """The ``nn.Module`` behind an adapter (adapters are modules themselves)."""
    if not isinstance(adapter, nn.Module):
        raise TypeError(f"generator adapters must be torch.nn.Module instances, got {type(adapter).__name__}")
    return adapter
