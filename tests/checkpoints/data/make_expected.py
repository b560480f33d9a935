"""Write the expected parameter / buffer names and shapes of the official full-size networks as JSON.

Derived from reading the official code (NVlabs stylegan2-ada-pytorch ``training/networks.py``,
NVlabs eg3d ``training/triplane.py`` + ``networks_stylegan2.py``, rosinality ``model.py``, encoder4editing
``models/encoders/psp_encoders.py`` + ``helpers.py``) — *not* from this library's classes, so the tests comparing
our modules against these lists are independent checks. No official code is reproduced here, only the naming rules.

Run: ``python tests/checkpoints/data/make_expected.py`` (rewrites the JSON files next to it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def nvidia_generator(z_dim, w_dim, c_dim, res, img_channels, base, cmax, mapping_layers, prefix=""):
    """NVIDIA StyleGAN2 mapping + synthesis ('skip'): {'params': {name: shape}, 'buffers': {...}}."""
    P, B = {}, {}
    ch = lambda r: min(base // r, cmax)  # noqa: E731
    if c_dim:
        P[f"{prefix}mapping.embed.weight"] = [w_dim, c_dim]
        P[f"{prefix}mapping.embed.bias"] = [w_dim]
    for i in range(mapping_layers):
        fan_in = (z_dim + (w_dim if c_dim else 0)) if i == 0 else w_dim
        P[f"{prefix}mapping.fc{i}.weight"] = [w_dim, fan_in]
        P[f"{prefix}mapping.fc{i}.bias"] = [w_dim]
    B[f"{prefix}mapping.w_avg"] = [w_dim]
    for r in [2 ** i for i in range(2, int(math.log2(res)) + 1)]:
        b = f"{prefix}synthesis.b{r}"
        c_out = ch(r)
        B[f"{b}.resample_filter"] = [4, 4]
        layers = []
        if r == 4:
            P[f"{b}.const"] = [c_out, 4, 4]
        else:
            layers.append(("conv0", ch(r // 2)))
        layers.append(("conv1", c_out))
        for name, c_in in layers:
            P[f"{b}.{name}.weight"] = [c_out, c_in, 3, 3]
            P[f"{b}.{name}.bias"] = [c_out]
            P[f"{b}.{name}.affine.weight"] = [c_in, w_dim]
            P[f"{b}.{name}.affine.bias"] = [c_in]
            P[f"{b}.{name}.noise_strength"] = []
            B[f"{b}.{name}.noise_const"] = [r, r]
            B[f"{b}.{name}.resample_filter"] = [4, 4]
        P[f"{b}.torgb.weight"] = [img_channels, c_out, 1, 1]
        P[f"{b}.torgb.bias"] = [img_channels]
        P[f"{b}.torgb.affine.weight"] = [c_out, w_dim]
        P[f"{b}.torgb.affine.bias"] = [c_out]
    return {"params": P, "buffers": B}


def rosinality_generator(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2):
    """rosinality ``Generator`` state dict names and shapes."""
    chans = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    S = {}
    for i in range(1, n_mlp + 1):
        S[f"style.{i}.weight"] = [style_dim, style_dim]
        S[f"style.{i}.bias"] = [style_dim]
    S["input.input"] = [1, chans[4], 4, 4]

    def styled(p, cin, cout, up):
        S[f"{p}.conv.weight"] = [1, cout, cin, 3, 3]
        S[f"{p}.conv.modulation.weight"] = [cin, style_dim]
        S[f"{p}.conv.modulation.bias"] = [cin]
        if up:
            S[f"{p}.conv.blur.kernel"] = [4, 4]
        S[f"{p}.noise.weight"] = [1]
        S[f"{p}.activate.bias"] = [cout]

    def rgb(p, cin, up):
        if up:
            S[f"{p}.upsample.kernel"] = [4, 4]
        S[f"{p}.conv.weight"] = [1, 3, cin, 1, 1]
        S[f"{p}.conv.modulation.weight"] = [cin, style_dim]
        S[f"{p}.conv.modulation.bias"] = [cin]
        S[f"{p}.bias"] = [1, 3, 1, 1]

    styled("conv1", chans[4], chans[4], False)
    rgb("to_rgb1", chans[4], False)
    log_size = int(math.log2(size))
    for j in range((log_size - 2) * 2 + 1):
        r = 2 ** ((j + 5) // 2)
        S[f"noises.noise_{j}"] = [1, 1, r, r]
    cin = chans[4]
    for k, i in enumerate(range(3, log_size + 1)):
        cout = chans[2 ** i]
        styled(f"convs.{2 * k}", cin, cout, True)
        styled(f"convs.{2 * k + 1}", cout, cout, False)
        rgb(f"to_rgbs.{k}", cout, True)
        cin = cout
    return S


def e4e_encoder(stylegan_size=1024):
    """Encoder4Editing(50, 'ir_se') names and shapes: {'params': ..., 'buffers': ...} (BN running stats = buffers)."""
    P, B = {}, {}

    def bn(p, c):
        P[f"{p}.weight"] = [c]
        P[f"{p}.bias"] = [c]
        B[f"{p}.running_mean"] = [c]
        B[f"{p}.running_var"] = [c]
        B[f"{p}.num_batches_tracked"] = []

    P["input_layer.0.weight"] = [64, 3, 3, 3]
    bn("input_layer.1", 64)
    P["input_layer.2.weight"] = [64]
    units = []
    for cin, depth, n in ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)):
        units += [(cin, depth)] + [(depth, depth)] * (n - 1)
    for i, (cin, d) in enumerate(units):
        p = f"body.{i}"
        if cin != d:
            P[f"{p}.shortcut_layer.0.weight"] = [d, cin, 1, 1]
            bn(f"{p}.shortcut_layer.1", d)
        bn(f"{p}.res_layer.0", cin)
        P[f"{p}.res_layer.1.weight"] = [d, cin, 3, 3]
        P[f"{p}.res_layer.2.weight"] = [d]
        P[f"{p}.res_layer.3.weight"] = [d, d, 3, 3]
        bn(f"{p}.res_layer.4", d)
        P[f"{p}.res_layer.5.fc1.weight"] = [d // 16, d, 1, 1]
        P[f"{p}.res_layer.5.fc2.weight"] = [d, d // 16, 1, 1]
    count = 2 * int(math.log2(stylegan_size)) - 2
    for j in range(count):
        spatial = 16 if j < 3 else (32 if j < 7 else 64)
        for k in range(int(math.log2(spatial))):
            P[f"styles.{j}.convs.{2 * k}.weight"] = [512, 512, 3, 3]
            P[f"styles.{j}.convs.{2 * k}.bias"] = [512]
        P[f"styles.{j}.linear.weight"] = [512, 512]
        P[f"styles.{j}.linear.bias"] = [512]
    P["latlayer1.weight"] = [512, 256, 1, 1]
    P["latlayer1.bias"] = [512]
    P["latlayer2.weight"] = [512, 128, 1, 1]
    P["latlayer2.bias"] = [512]
    return {"params": P, "buffers": B}


def main() -> None:
    files = {
        "stylegan2_ffhq_1024.json": nvidia_generator(512, 512, 0, 1024, 3, 32768, 512, 8),
        "stylegan2_ffhq_256.json": nvidia_generator(512, 512, 0, 256, 3, 16384, 512, 8),
        # EG3D G_ema backbone: StyleGAN2Backbone(z 512, c 25, w 512, 256², 96 channels), mapping 2 layers
        "eg3d_ffhq_backbone.json": nvidia_generator(512, 512, 25, 256, 96, 32768, 512, 2, prefix="backbone."),
        "e4e_ffhq_encoder.json": e4e_encoder(1024),
        "rosinality_ffhq_1024.json": {"state_dict": rosinality_generator(1024)},
    }
    for name, content in files.items():
        (HERE / name).write_text(json.dumps(content, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
