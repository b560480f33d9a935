"""The audit report's figures (matplotlib, PNG) and its self-contained HTML page (figures as PNG data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from guide_unlearn.errors import BackendUnavailableError

MEANINGS = {
    "id": "mean cosine, identity of G_s(w_u) vs G_u(w_u) over the views (lower = erased)",
    "id_others": "the same for the other people's codes (higher = kept)",
    "held_out_recognised_before": "held-out photos whose G_s rendering is recognised as the person",
    "held_out_recognised_after": "the same rendered by G_u (lower = the whole identity is erased)",
    "held_out_similarity_before": "mean best cosine of those renderings to the person's photos, G_s",
    "held_out_similarity_after": "the same, G_u",
    "reinversion_default_recognised_before": "attack: photos inverted through G_s by the fresh default inverter",
    "reinversion_default_recognised_after": "attack: the same through G_u (lower = the attack fails)",
    "reinversion_scratch_recognised_before": "attack: from-scratch optimisation projector through G_s",
    "reinversion_scratch_recognised_after": "attack: the same through G_u",
    "others_kept": "other people re-inverted through G_u and still recognised as themselves",
    "leakage_recognised": "probe renderings (base model + patch only) recognised as the person",
    "leakage_similarity": "highest cosine of a probe rendering to the person's photos",
    "fd_pre": "Fréchet distance G_s vs G_u samples in the protocol's feature space (not FID)",
    "fd_real_delta": "FD(real, G_u) - FD(real, G_s) in that feature space",
    "fid_pre": "Inception FID G_s vs G_u (paper-v1 only)",
    "fid_real_delta": "FID(real, G_u) - FID(real, G_s) (paper-v1 only)",
}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError("the audit report's figures need matplotlib; install the 'audit' extra "
                                      "(pip install 'guide-unlearn[audit]')") from exc
    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _np_image(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _grid(rows: Sequence[tuple[str, torch.Tensor]], titles: Optional[Sequence[Sequence[str]]] = None,
          suptitle: str = "", cell: float = 1.3) -> bytes:
    """Rows of images ([N, 3, H, W] each) with a label per row (and optional per-image captions) -> PNG bytes.
    The images are tiled into one picture (one imshow: quick even with many cells)."""
    plt = _plt()
    size = max(int(r.shape[-1]) for _, r in rows)
    pad = max(2, size // 16)
    ncols = max(1, max(int(r.shape[0]) for _, r in rows))
    gap = size // 3 if titles is not None else 0  # room for the captions under each row
    canvas = np.full((len(rows) * (size + pad + gap), ncols * (size + pad), 3), 255, np.uint8)
    for i, (_, imgs) in enumerate(rows):
        if imgs.shape[-1] != size:
            imgs = torch.nn.functional.interpolate(imgs.float(), size=size, mode="nearest")
        for j in range(imgs.shape[0]):
            y, x = i * (size + pad + gap), j * (size + pad)
            canvas[y:y + size, x:x + size] = _np_image(imgs[j])
    fig = plt.figure(figsize=(cell * ncols + 1.4, cell * len(rows) * (1 + gap / size) + 0.5))
    ax = fig.add_axes([0.12, 0.02, 0.86, 0.88])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for i, (label, _) in enumerate(rows):
        ax.text(-pad * 2, i * (size + pad + gap) + size / 2, label, ha="right", va="center", fontsize=8)
        if titles is not None:
            for j, t in enumerate(titles[i]):
                if t:
                    ax.text(j * (size + pad) + size / 2, i * (size + pad + gap) + size + gap / 2, t, ha="center",
                            va="center", fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _png(fig)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.3f}"


def make_figures(report) -> dict[str, bytes]:
    """{file name: PNG bytes}: person.png, held_out.png, attacks.png, leakage.png, histograms.png, loss.png
    (those whose data the report has)."""
    plt = _plt()
    g = report.gallery
    rule = report.thresholds.get("same_person_rule", "")
    score_name = "dlib distance" if "Euclidean" in rule else "cosine"
    figs: dict[str, bytes] = {}
    if "person_source" in g:
        rows = [("request photo", g["request_photo"]), ("G_s", g["person_source"]), ("G_u", g["person_patched"])]
        figs["person.png"] = _grid(rows, suptitle=f"the person: request photo, source and patched renderings "
                                                  f"(id = {_fmt(report.metrics['id'])}, {report.protocol['identity']})")
    if "held_photos" in g:
        b, a = g["held_scores"]
        titles = [[""] * len(b), [f"{score_name} {_fmt(x)}" for x in b], [f"{score_name} {_fmt(x)}" for x in a]]
        figs["held_out.png"] = _grid([("held-out photo", g["held_photos"]), ("G_s", g["held_before"]),
                                      ("G_u", g["held_after"])], titles,
                                     suptitle="held-out photos (never shown to the erase) and their renderings; "
                                              "score = best match to the person's photos")
    attack_rows = []
    for tag, what in (("default", "default inverter"), ("scratch", "scratch projector")):
        if f"attack_{tag}" in g:
            before, after = g[f"attack_{tag}"]
            attack_rows += [(f"{what}\nthrough G_s", before), (f"{what}\nthrough G_u", after)]
    if attack_rows:
        figs["attacks.png"] = _grid(attack_rows, suptitle="re-inversion attacks on the person's photos")
    if "leakage" in g:
        src, pat = g["leakage"]
        figs["leakage.png"] = _grid([("G_s at probe", src), ("G_u at probe", pat)],
                                    suptitle="patch-leakage probe: where G_u differs most from G_s (no photo used)")
    if "hist_person" in g:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        series = [("person, G_s", g["hist_person"][0], "tab:blue", "-"),
                  ("person, G_u", g["hist_person"][1], "tab:red", "-")]
        if "hist_others" in g:
            series += [("others, G_s", g["hist_others"][0], "tab:green", "--"),
                       ("others, G_u", g["hist_others"][1], "tab:orange", "--")]
        finite = [np.asarray(s)[np.isfinite(s)] for _, s, _, _ in series]
        allv = np.concatenate([f for f in finite if f.size] or [np.zeros(1)])
        bins = np.linspace(float(allv.min()) - 1e-3, float(allv.max()) + 1e-3, 25)
        for (label, _, color, ls), vals in zip(series, finite):
            if vals.size:
                ax.hist(vals, bins=bins, histtype="step", color=color, linestyle=ls, label=f"{label} (n={vals.size})",
                        density=True)
        ax.axvline(report.thresholds.get("same_person", 0.0), color="k", lw=1, ls=":", label="same-person cut")
        ax.set_xlabel(f"best {score_name} to the own photos ({report.protocol['identity']})")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.set_title("identity scores, before vs after", fontsize=9)
        fig.tight_layout()
        figs["histograms.png"] = _png(fig)
    hist = g.get("loss_history")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if hist and hist.get("step"):
        for k, v in hist.items():
            if k != "step" and len(v) == len(hist["step"]) and any(x != 0 for x in v):
                ax.plot(hist["step"], v, label=k, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("erase step")
        ax.legend(fontsize=6, ncol=2)
        ax.set_title("the erase's loss terms (from the patch metadata)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "this patch carries no loss history\n(made before guide_unlearn stored one)",
                ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    figs["loss.png"] = _png(fig)
    return figs


def render_html(report, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page (no network): metrics table, protocol, networks, thresholds, verdicts and
    every figure as a ``data:image/png;base64`` URI."""
    e = html.escape
    rows = "".join(f"<tr><td><code>{e(k)}</code></td><td>{_fmt(v)}</td><td>{e(MEANINGS.get(k, ''))}</td>"
                   f"<td>{e(report.details.get('not_run', {}).get(k, ''))}</td></tr>"
                   for k, v in report.metrics.items())
    captions = {"person.png": "The person", "held_out.png": "Held-out photos", "attacks.png": "Attacks",
                "leakage.png": "Patch-leakage probe", "histograms.png": "Identity scores", "loss.png": "Erase losses"}
    imgs = "".join(f"<h2>{e(captions.get(n, n))}</h2><img alt='{e(n)}' src='data:image/png;base64,"
                   f"{base64.b64encode(b).decode()}'>" for n, b in figures.items())
    verdict = (report.details.get("leakage") or {}).get("verdict", "the leakage probe was not run")
    skipped = "".join(f"<li>{e(s['role'])}: {e(s['photo'])} — {e(s['reason'])}</li>"
                      for s in report.details.get("skipped", []))
    counts = report.details.get("counts", {})
    block = lambda obj: f"<pre>{e(json.dumps(obj, indent=2, default=str))}</pre>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>guide_unlearn audit — {e(report.protocol['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}}img{{max-width:100%}}
pre{{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}}</style></head><body>
<h1>Erasure audit</h1>
<p>Protocol <b>{e(report.protocol['name'])}</b> (version {e(str(report.protocol['version']))}):
{e(report.protocol['description'])}. Every figure is made with the networks listed below; the Fréchet distances
are <b>{e(report.protocol['feature_space'])}</b>, not FID.</p>
<p>Patch {e(str(report.details.get('patch', {}).get('patch_id')))}; photos: request {counts.get('request')},
held out {counts.get('held_out')}, others {counts.get('others')}, real {counts.get('real')},
skipped {counts.get('skipped')}. Audit time {report.seconds.get('total', 0):.1f} s.</p>
<p><b>Leakage:</b> {e(verdict)}.</p>
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th><th>not run because</th></tr>{rows}</table>
<h2>Same-person rules</h2>{block(report.thresholds)}
<h2>Networks</h2>{block(report.networks)}
{imgs}
<h2>Skipped photos</h2><ul>{skipped or '<li>none</li>'}</ul>
<h2>Time (seconds)</h2>{block(report.seconds)}
</body></html>
"""
