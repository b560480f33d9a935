"""Writes the expected official parameter/buffer names and shapes used by the full-size tests.

Derived by hand from the architecture descriptions (docs/eg3d.md and the NVIDIA / GOAE layouts),
deliberately without importing guide_unlearn, so the lists are an independent statement of what the official
``G_ema`` of ffhqrebalanced512-128.pkl and GOAE's ``encoder_FFHQ.pt`` contain. Run from this folder:
``python make_expected_names.py``; the .txt files are committed.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def _layer(prefix, cin, cout, res, k=3, w_dim=512):
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,),
            f"{prefix}.affine.weight": (cin, w_dim), f"{prefix}.affine.bias": (cin,),
            f"{prefix}.noise_strength": (), f"{prefix}.noise_const": (res, res),
            f"{prefix}.resample_filter": (4, 4)}


def _torgb(prefix, cin, cout, w_dim=512):
    return {f"{prefix}.weight": (cout, cin, 1, 1), f"{prefix}.bias": (cout,),
            f"{prefix}.affine.weight": (cin, w_dim), f"{prefix}.affine.bias": (cin,)}


def _block(prefix, cin, cout, res, img_channels):
    out = {f"{prefix}.resample_filter": (4, 4)}
    if cin == 0:
        out[f"{prefix}.const"] = (cout, res, res)
    else:
        out.update(_layer(f"{prefix}.conv0", cin, cout, res))
    out.update(_layer(f"{prefix}.conv1", cout, cout, res))
    out.update(_torgb(f"{prefix}.torgb", cout, img_channels))
    return out


def eg3d_ffhq512():
    names = {"backbone.mapping.embed.weight": (512, 25), "backbone.mapping.embed.bias": (512,),
             "backbone.mapping.fc0.weight": (512, 1024), "backbone.mapping.fc0.bias": (512,),
             "backbone.mapping.fc1.weight": (512, 512), "backbone.mapping.fc1.bias": (512,),
             "backbone.mapping.w_avg": (512,)}
    ch = {res: min(32768 // res, 512) for res in (4, 8, 16, 32, 64, 128, 256)}
    for res in ch:
        names.update(_block(f"backbone.synthesis.b{res}", ch[res // 2] if res > 4 else 0, ch[res], res, 96))
    names.update(_block("superresolution.block0", 32, 256, 256, 3))
    names.update(_block("superresolution.block1", 256, 128, 512, 3))
    names.update({"decoder.net.0.weight": (64, 32), "decoder.net.0.bias": (64,),
                  "decoder.net.2.weight": (33, 64), "decoder.net.2.bias": (33,)})
    return names


def goae_ffhq():
    names = {"swin_model.patch_embed.proj.weight": (128, 3, 4, 4), "swin_model.patch_embed.proj.bias": (128,),
             "swin_model.patch_embed.norm.weight": (128,), "swin_model.patch_embed.norm.bias": (128,)}
    depths, heads = (2, 2, 18, 2), (4, 8, 16, 32)
    for i in range(4):
        d, res, h = 128 * 2 ** i, 64 // 2 ** i, heads[i]
        win = min(16, res)
        shifted = res > 16  # the window (16) is smaller than the map: odd blocks use shifted windows
        for j in range(depths[i]):
            p = f"swin_model.layers.{i}.blocks.{j}"
            names.update({
                f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,), f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
                f"{p}.attn.logit_scale": (h, 1, 1), f"{p}.attn.cpb_mlp.0.weight": (512, 2),
                f"{p}.attn.cpb_mlp.0.bias": (512,), f"{p}.attn.cpb_mlp.2.weight": (h, 512),
                f"{p}.attn.relative_coords_table": (1, 2 * win - 1, 2 * win - 1, 2),
                f"{p}.attn.relative_position_index": (win * win, win * win),
                f"{p}.attn.qkv.weight": (3 * d, d), f"{p}.attn.q_bias": (d,), f"{p}.attn.v_bias": (d,),
                f"{p}.attn.proj.weight": (d, d), f"{p}.attn.proj.bias": (d,),
                f"{p}.mlp.fc1.weight": (4 * d, d), f"{p}.mlp.fc1.bias": (4 * d,),
                f"{p}.mlp.fc2.weight": (d, 4 * d), f"{p}.mlp.fc2.bias": (d,)})
            if shifted and j % 2 == 1:
                names[f"{p}.attn_mask"] = ((res // win) ** 2, win * win, win * win)
        if i < 3:
            p = f"swin_model.layers.{i}.downsample"
            names.update({f"{p}.reduction.weight": (2 * d, 4 * d), f"{p}.norm.weight": (2 * d,),
                          f"{p}.norm.bias": (2 * d,)})
    names.update({"swin_model.norm.weight": (1024,), "swin_model.norm.bias": (1024,)})

    def lin(p, i, o):
        names.update({f"{p}.weight": (o, i), f"{p}.bias": (o,)})

    def mlp2(p, i, o):
        lin(f"{p}.0", i, i)
        lin(f"{p}.2", i, o)

    mlp2("mapper_base_spatial", 64, 1)
    mlp2("mapper_base_channel", 1024, 512)
    for level, k in (("coarse", 3), ("mid", 3), ("fine", 7)):
        mlp2(f"mapper_query_spatial_{level}", 64, k)
        mlp2(f"mapper_query_channel_{level}", 1024, 512)
    lin("mapper_coarse_channel.0", 512, 512)
    lin("mapper_mid_channel.0", 256, 512)
    lin("mapper_fine_channel.0", 128, 256)
    lin("mapper_fine_channel.2", 256, 512)
    lin("mapper_coarse_to_mid_spatial.0", 256, 512)
    lin("mapper_coarse_to_mid_spatial.2", 512, 1024)
    lin("mapper_mid_to_fine_spatial.0", 1024, 2048)
    lin("mapper_mid_to_fine_spatial.2", 2048, 4096)
    for level in ("coarse", "mid", "fine"):
        p = f"cross_att_{level}"
        names.update({f"{p}.multihead_attn.in_proj_weight": (1536, 512), f"{p}.multihead_attn.in_proj_bias": (1536,)})
        lin(f"{p}.multihead_attn.out_proj", 512, 512)
        lin(f"{p}.linear1", 512, 1024)
        lin(f"{p}.linear2", 1024, 512)
    return names


def write(path, names):
    with open(path, "w") as f:
        for k, shape in names.items():
            f.write(f"{k} {','.join(str(s) for s in shape)}\n")


if __name__ == "__main__":
    write(HERE / "eg3d_ffhq512_g_ema_names.txt", eg3d_ffhq512())
    write(HERE / "goae_encoder_ffhq_names.txt", goae_ffhq())
