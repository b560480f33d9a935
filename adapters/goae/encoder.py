"""The GOAE encoder (Yuan et al., ICCV 2023): a Swin Transformer V2 backbone, latent mappers and three
cross-attention heads that predict an offset from ``w_avg`` for all 14 EG3D style vectors (docs/eg3d.md).

The backbone is timm's maintained ``SwinTransformerV2``: its parameter names equal the ones in GOAE's
``encoder_FFHQ.pt`` except that timm puts each patch-merging layer at the *start* of the next stage
(``layers.{i+1}.downsample``) where GOAE's Swin has it at the *end* of the stage (``layers.{i}.downsample``);
:mod:`.convert` renames those keys and checks the buffers timm recomputes. Everything after the backbone is
written here from the architecture (names as in GOAE: ``mapper_*``, ``cross_att_{coarse,mid,fine}``).

Data flow (FFHQ sizes; L = tokens, D = channels):
    image [N,3,256,256] -> patch embed -> x_fine [N,4096,128] -> stage 0 -> merge -> x_mid [N,1024,256]
    -> stage 1 -> merge -> x_coarse [N,256,512] -> stage 2 -> merge -> x_query [N,64,1024] -> stage 3 -> norm
    -> x_base [N,64,1024].
    w_base (1 vector) from x_base; queries (3 coarse, 3 mid, 7 fine) from x_query; keys/values from
    x_coarse, x_mid (+ up-mapped coarse), x_fine (+ up-mapped mid); ws = w_base + [0, coarse, mid, fine].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import BackendUnavailableError, ConfigError, InputError


def _swin_v2_class():
    try:
        from timm.models.swin_transformer_v2 import SwinTransformerV2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "the GOAE encoder needs timm's Swin Transformer V2: `pip install timm` (>= 1.0)") from exc
    return SwinTransformerV2


@dataclass(frozen=True)
class GOAEConfig:
    """Shape of a GOAE encoder (defaults: the official ``encoder_FFHQ.pt`` for EG3D FFHQ-512)."""

    img_size: int = 256  # input resolution the backbone expects
    patch_size: int = 4  # patch embedding stride
    embed_dim: int = 128  # channels of the first stage (doubles per stage)
    depths: tuple[int, ...] = (2, 2, 18, 2)  # Swin blocks per stage (4 stages)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)  # attention heads per stage
    window_size: int = 16  # attention window (clamped to the feature size)
    pretrained_window_sizes: tuple[int, ...] = (12, 12, 12, 6)  # normalisation of the relative-position table
    mlp_ratio: float = 4.0  # Swin MLP width / channels
    drop_path_rate: float = 0.2  # stochastic depth (active only in train mode)
    w_dim: int = 512  # style vector width
    mlp_layers: int = 2  # depth of the query/base mappers
    ws_split: tuple[int, int, int, int] = (1, 3, 3, 7)  # ws predicted by: base only, coarse, mid, fine heads
    attention_heads: int = 4  # heads of each cross-attention
    attention_ff: int = 1024  # feed-forward width of each cross-attention
    attention_dropout: float = 0.1  # dropout in the cross-attention (active only in train mode)

    def __post_init__(self):
        if len(self.depths) != 4 or len(self.num_heads) != 4 or len(self.pretrained_window_sizes) != 4:
            raise ConfigError("GOAE needs a 4-stage Swin backbone (depths, num_heads, pretrained_window_sizes)")
        if self.img_size % (self.patch_size * 8) != 0:
            raise ConfigError(f"img_size must be a multiple of 8 × patch_size, got {self.img_size}")
        if self.ws_split[0] != 1:
            raise ConfigError("the first style vector comes from the base branch only: ws_split[0] must be 1")

    @property
    def num_ws(self) -> int:
        """Style vectors produced (14 for EG3D-512)."""
        return sum(self.ws_split)

    def tokens(self, stage: int) -> int:
        """Tokens entering ``stage`` (0..3); stage 4 = after the last stage."""
        side = self.img_size // self.patch_size // (2 ** min(stage, 3))
        return side * side

    def dim(self, stage: int) -> int:
        """Channels entering ``stage`` (0..3)."""
        return self.embed_dim * 2 ** min(stage, 3)


def _mlp(in_dim: int, out_dim: int, layers: int) -> nn.Sequential:
    """(layers - 1) × [Linear(in, in), LeakyReLU] then Linear(in, out) — GOAE's ``get_mlp_layer`` layout."""
    mods: list[nn.Module] = []
    for _ in range(layers - 1):
        mods += [nn.Linear(in_dim, in_dim), nn.LeakyReLU()]
    mods.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*mods)


class CrossAttention(nn.Module):
    """Queries attend to key/value tokens; post-norm (no affine) then a residual ReLU feed-forward.

    Names: ``multihead_attn.{in_proj_weight, in_proj_bias, out_proj.*}``, ``linear1``, ``linear2``.
    """

    def __init__(
        self,
        d_model: int,  # token width
        nhead: int,  # attention heads
        dim_feedforward: int,  # feed-forward hidden width
        dropout: float = 0.1,  # dropout on attention, residuals and feed-forward (train mode only)
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout_attn = nn.Dropout(dropout)
        self.dropout_ff = nn.Dropout(dropout)
        self.d_model = d_model

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """queries [N, Q, D], memory [N, L, D] -> [N, Q, D]."""
        attended = self.multihead_attn(queries, memory, memory, need_weights=False)[0]
        x = F.layer_norm(queries + self.dropout_attn(attended), (self.d_model,))
        return x + self.dropout_ff(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class GOAEncoder(nn.Module):
    """images [N, 3, S, S] in [-1, 1] (S = ``config.img_size``) -> ws offsets [N, num_ws, w_dim] from w_avg."""

    def __init__(self, config: GOAEConfig = GOAEConfig()):
        super().__init__()
        self.config = cfg = config
        swin_cls = _swin_v2_class()
        self.swin_model = swin_cls(
            img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=3, num_classes=0, embed_dim=cfg.embed_dim,
            depths=tuple(cfg.depths), num_heads=tuple(cfg.num_heads), window_size=cfg.window_size,
            mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_rate=0.0, drop_path_rate=cfg.drop_path_rate,
            pretrained_window_sizes=tuple(cfg.pretrained_window_sizes))
        w, layers = cfg.w_dim, cfg.mlp_layers
        l_base, d_base = cfg.tokens(3), cfg.dim(3)  # x_base and x_query: 64 tokens × 1024
        _, n_coarse, n_mid, n_fine = cfg.ws_split
        self.mapper_base_spatial = _mlp(l_base, 1, layers)
        self.mapper_base_channel = _mlp(d_base, w, layers)
        self.mapper_query_spatial_coarse = _mlp(l_base, n_coarse, layers)
        self.mapper_query_channel_coarse = _mlp(d_base, w, layers)
        self.mapper_query_spatial_mid = _mlp(l_base, n_mid, layers)
        self.mapper_query_channel_mid = _mlp(d_base, w, layers)
        self.mapper_query_spatial_fine = _mlp(l_base, n_fine, layers)
        self.mapper_query_channel_fine = _mlp(d_base, w, layers)
        self.mapper_coarse_channel = nn.Sequential(nn.Linear(cfg.dim(2), w), nn.LeakyReLU())
        self.mapper_mid_channel = nn.Sequential(nn.Linear(cfg.dim(1), w), nn.LeakyReLU())
        self.mapper_fine_channel = nn.Sequential(nn.Linear(cfg.dim(0), w // 2), nn.LeakyReLU(),
                                                 nn.Linear(w // 2, w), nn.LeakyReLU())
        l_c, l_m = cfg.tokens(2), cfg.tokens(1)
        self.mapper_coarse_to_mid_spatial = nn.Sequential(nn.Linear(l_c, 2 * l_c), nn.LeakyReLU(),
                                                          nn.Linear(2 * l_c, l_m), nn.LeakyReLU())
        self.mapper_mid_to_fine_spatial = nn.Sequential(nn.Linear(l_m, 2 * l_m), nn.LeakyReLU(),
                                                        nn.Linear(2 * l_m, cfg.tokens(0)), nn.LeakyReLU())
        self.cross_att_coarse = CrossAttention(w, cfg.attention_heads, cfg.attention_ff, cfg.attention_dropout)
        self.cross_att_mid = CrossAttention(w, cfg.attention_heads, cfg.attention_ff, cfg.attention_dropout)
        self.cross_att_fine = CrossAttention(w, cfg.attention_heads, cfg.attention_ff, cfg.attention_dropout)
        self.eval()

    @property
    def num_ws(self) -> int:
        """Style vectors produced."""
        return self.config.num_ws

    def backbone_features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images [N, 3, S, S] -> (x_base [N,L3,D3], x_query [N,L3,D3], x_coarse [N,L2,D2], x_mid [N,L1,D1],
        x_fine [N,L0,D0]) — token sequences at the four scales (see the module docstring)."""
        swin = self.swin_model
        h = swin.patch_embed(images)  # NHWC
        taps = [h]
        for i, stage in enumerate(swin.layers):
            if i > 0:
                h = stage.downsample(h)
                taps.append(h)
            for block in stage.blocks:
                h = block(h)
        h = swin.norm(h)
        x_fine, x_mid, x_coarse, x_query = (t.flatten(1, 2) for t in taps)
        return h.flatten(1, 2), x_query, x_coarse, x_mid, x_fine

    @staticmethod
    def _pooled(tokens: torch.Tensor, spatial: nn.Module, channel: nn.Module) -> torch.Tensor:
        """[N, L, D] -> [N, k, w]: learned token mixing (L -> k) plus the max over tokens, then D -> w."""
        t = tokens.transpose(1, 2)  # [N, D, L]
        mixed = spatial(t).transpose(1, 2)  # [N, k, D]
        return channel(mixed + t.amax(dim=-1, keepdim=True).transpose(1, 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] in [-1, 1] -> offsets [N, num_ws, w_dim] (add w_avg to get ws)."""
        s = self.config.img_size
        if images.ndim != 4 or images.shape[1:] != (3, s, s):
            raise InputError(f"GOAE expects images [N, 3, {s}, {s}], got {list(images.shape)}")
        x_base, x_query, x_coarse, x_mid, x_fine = self.backbone_features(images)
        w_base = self._pooled(x_base, self.mapper_base_spatial, self.mapper_base_channel)  # [N, 1, w]
        q_coarse = self._pooled(x_query, self.mapper_query_spatial_coarse, self.mapper_query_channel_coarse)
        q_mid = self._pooled(x_query, self.mapper_query_spatial_mid, self.mapper_query_channel_mid)
        q_fine = self._pooled(x_query, self.mapper_query_spatial_fine, self.mapper_query_channel_fine)
        kv_coarse = self.mapper_coarse_channel(x_coarse)
        kv_mid = self.mapper_mid_channel(x_mid) + self.mapper_coarse_to_mid_spatial(kv_coarse.transpose(1, 2)).transpose(1, 2)
        kv_fine = self.mapper_fine_channel(x_fine) + self.mapper_mid_to_fine_spatial(kv_mid.transpose(1, 2)).transpose(1, 2)
        delta = torch.cat([torch.zeros_like(w_base),
                           self.cross_att_coarse(q_coarse, kv_coarse),
                           self.cross_att_mid(q_mid, kv_mid),
                           self.cross_att_fine(q_fine, kv_fine)], dim=1)
        return w_base + delta
