"""EG3D renderer on analytic cases: plane projections, sampling, ray marching, importance sampling, rays."""

import math

import pytest
import torch

from guide_unlearn.adapters.eg3d import cameras as C
from guide_unlearn.adapters.eg3d import renderer as R


def test_projections_are_xy_xz_zx_as_the_inverse_plane_bases_give():
    pts = torch.randn(2, 7, 3)
    ours = R.project_onto_planes(pts)  # [N, 3, M, 2]
    axes = R.plane_axes()
    for k in range(3):
        ref = (pts @ torch.linalg.inv(axes[k]))[..., :2]
        assert torch.allclose(ours[:, k], ref, atol=1e-6)
    assert torch.equal(ours[:, 2], pts[..., [2, 0]])  # the ZX quirk


def _ramp_planes(res=8, c=2):
    """Channel 0 of every plane = pixel column index, channel 1 = pixel row index."""
    cols = torch.arange(res).float().expand(res, res)
    rows = cols.t()
    plane = torch.stack([cols, rows])  # [2, H, W]
    return plane.expand(1, 3, c, res, res).clone()


def test_plane_sampling_uses_2_over_box_warp_and_bilinear_lookup():
    res = 8
    planes = _ramp_planes(res)
    pts = torch.tensor([[[0.125, -0.25, 0.0625]]])  # inside the unit box
    for box_warp in (1.0, 2.0):
        out = R.sample_from_planes(planes, pts, box_warp)  # [1, 3, 1, 2]
        g = (2.0 / box_warp) * pts[0, 0]
        pix = lambda t: ((t + 1) * res - 1) / 2  # align_corners=False
        x, y, z = g.tolist()
        expected = torch.tensor([[pix(x), pix(y)], [pix(x), pix(z)], [pix(z), pix(x)]])
        assert torch.allclose(out[0, :, 0], expected, atol=1e-5)


def test_points_outside_the_box_sample_zero_features():
    planes = torch.ones(1, 3, 4, 8, 8)
    out = R.sample_from_planes(planes, torch.tensor([[[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]]), 1.0)
    assert torch.all(out[0, :, 0] == 0) and torch.allclose(out[0, :, 1], torch.ones(3, 4))


def test_decoder_averages_planes_and_widens_the_sigmoid():
    dec = R.OSGDecoder(4, 8, 5)
    feats = torch.randn(2, 3, 6, 4)
    rgb, sigma = dec(feats)
    assert rgb.shape == (2, 6, 5) and sigma.shape == (2, 6, 1)
    rgb2, _ = dec(feats.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert torch.allclose(rgb, rgb2, atol=1e-6)
    with torch.no_grad():
        dec.net[2].weight.zero_()
        dec.net[2].bias.copy_(torch.tensor([0.0, 50, -50, 0, 0, 0]))
    rgb, _ = dec(feats)
    assert rgb[..., 0].max().item() == pytest.approx(1.001, abs=1e-5)
    assert rgb[..., 1].min().item() == pytest.approx(-0.001, abs=1e-5)


def test_ray_march_constant_medium_matches_beer_lambert():
    s, start, end = 65, 2.0, 3.0
    depths = torch.linspace(start, end, s).reshape(1, 1, s, 1)
    raw = 1.5
    density = math.log1p(math.exp(raw - 1))  # softplus(raw - 1)
    colour = torch.tensor([0.2, 0.5, 0.9])
    rgb, depth, weights = R.ray_march(colour.expand(1, 1, s, 3), torch.full((1, 1, s, 1), raw), depths)
    opacity = 1 - math.exp(-density * (end - start))
    assert weights.sum().item() == pytest.approx(opacity, abs=1e-5)
    assert torch.allclose(rgb[0, 0], (colour * opacity) * 2 - 1, atol=1e-5)
    assert start <= depth.item() <= end


def test_empty_volume_renders_background():
    depths = torch.linspace(2, 3, 16).reshape(1, 1, 16, 1).expand(2, 3, 16, 1)
    dens = torch.full((2, 3, 16, 1), -100.0)
    col = torch.rand(2, 3, 16, 3)
    rgb, _, w = R.ray_march(col, dens, depths)
    assert torch.allclose(rgb, torch.full_like(rgb, -1.0), atol=1e-6) and w.sum() < 1e-6
    rgb_white, _, _ = R.ray_march(col, dens, depths, white_back=True)
    assert torch.allclose(rgb_white, torch.ones_like(rgb_white), atol=1e-6)


def _constant_decoder(sigma_raw, colour_logit, c=4, out=3):
    dec = R.OSGDecoder(c, 8, out)
    with torch.no_grad():
        dec.net[2].weight.zero_()
        dec.net[2].bias.copy_(torch.tensor([sigma_raw] + [colour_logit] * out))
    return dec


def test_rendering_constant_planes_gives_the_predicted_colour_and_opacity():
    opts = R.RenderingOptions(depth_resolution=24, depth_resolution_importance=24)
    cams = C.make_cameras(math.pi / 2, math.pi / 2)
    pose, k = C.decode_cameras(cams)
    o, d = R.sample_rays(pose, k, 4)
    planes = torch.randn(1, 3, 4, 8, 8)
    colour = torch.sigmoid(torch.tensor(0.7)).item() * 1.002 - 0.001
    # Dense medium: fully opaque, the colour is the decoder's colour.
    rgb, depth, opacity = R.render_planes(planes, _constant_decoder(40.0, 0.7), o, d, opts, torch.Generator().manual_seed(0))
    assert rgb.shape == (1, 16, 3) and depth.shape == (1, 16, 1) and opacity.shape == (1, 16, 1)
    assert torch.allclose(opacity, torch.ones_like(opacity), atol=1e-4)
    assert torch.allclose(rgb, torch.full_like(rgb, colour * 2 - 1), atol=1e-4)
    # Thin medium: opacity = 1 - exp(-density × traversed length), the length being the jittered sample span.
    density = math.log1p(math.exp(0.5 - 1))
    rgb, _, opacity = R.render_planes(planes, _constant_decoder(0.5, 0.7), o, d, opts, torch.Generator().manual_seed(0))
    delta = (opts.ray_end - opts.ray_start) / (opts.depth_resolution - 1)
    lo = 1 - math.exp(-density * (opts.ray_end - opts.ray_start - delta))
    hi = 1 - math.exp(-density * (opts.ray_end - opts.ray_start + delta))
    assert lo - 1e-5 <= opacity.min().item() and opacity.max().item() <= hi + 1e-5
    assert torch.allclose((rgb + 1) / 2, colour * opacity.expand_as(rgb), atol=1e-5)


def test_stratified_samples_are_jittered_within_their_cells_and_seeded():
    a = R.sample_stratified(2, 5, 2.25, 3.3, 48, torch.Generator().manual_seed(1))
    b = R.sample_stratified(2, 5, 2.25, 3.3, 48, torch.Generator().manual_seed(1))
    c = R.sample_stratified(2, 5, 2.25, 3.3, 48, torch.Generator().manual_seed(2))
    assert a.shape == (2, 5, 48, 1) and torch.equal(a, b) and not torch.equal(a, c)
    grid = torch.linspace(2.25, 3.3, 48).reshape(1, 1, 48, 1)
    offset = (a - grid) / ((3.3 - 2.25) / 47)
    assert offset.min() >= 0 and offset.max() < 1


def test_importance_sampling_is_reproducible_and_follows_the_weights():
    depths = torch.linspace(2.25, 3.3, 48).reshape(1, 1, 48, 1).expand(1, 6, 48, 1).contiguous()
    weights = torch.zeros(1, 6, 47, 1)
    weights[:, :, 20] = 1.0  # all mass in one interval
    f1 = R.sample_importance(depths, weights, 48, torch.Generator().manual_seed(5))
    f2 = R.sample_importance(depths, weights, 48, torch.Generator().manual_seed(5))
    f3 = R.sample_importance(depths, weights, 48, torch.Generator().manual_seed(6))
    assert f1.shape == (1, 6, 48, 1) and torch.equal(f1, f2) and not torch.equal(f1, f3)
    mids = 0.5 * (depths[0, 0, :-1, 0] + depths[0, 0, 1:, 0])
    near_peak = ((f1 > mids[17]) & (f1 < mids[22])).float().mean()
    assert near_peak > 0.6  # the smoothed peak covers a few intervals; the 0.01 floor spreads the rest
    assert f1.min() >= mids[0] and f1.max() <= mids[-1]


def test_rays_go_through_pixel_centres_in_opencv_orientation():
    cams = C.make_cameras(math.pi / 2, math.pi / 2)
    pose, k = C.decode_cameras(cams)
    res = 5
    o, d = R.sample_rays(pose, k, res)
    assert o.shape == (1, 25, 3) and d.shape == (1, 25, 3)
    assert torch.allclose(o, pose[:, None, :3, 3].expand(1, 25, 3))
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 25), atol=1e-6)
    cam_dirs = d[0] @ pose[0, :3, :3]  # world -> camera frame
    assert torch.allclose(cam_dirs[12], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # centre pixel: forward
    f = k[0, 0, 0].item()
    # Pixel (row 0, column 4): x = (4.5/5 - 0.5)/f to the right, y = (0.5/5 - 0.5)/f up (negative = up).
    x, y = cam_dirs[4, 0] / cam_dirs[4, 2], cam_dirs[4, 1] / cam_dirs[4, 2]
    assert x.item() == pytest.approx(0.4 / f, abs=1e-5) and y.item() == pytest.approx(-0.4 / f, abs=1e-5)
