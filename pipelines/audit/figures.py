"""The audit report's figures (matplotlib, PNG) and its self-contained HTML page (figures as PNG data URIs).
Each metric family draws its own figures (``MetricFamily.figures``) with the helpers here; the loss curves of the
erase come from the patch."""

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

from .families import METRIC_FAMILIES, meaning_of


def pyplot():
    """matplotlib.pyplot on the Agg backend (BackendUnavailableError naming the 'audit' extra without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError("the audit report's figures need matplotlib; install the 'audit' extra "
                                      "(pip install 'guide-unlearn[audit]')") from exc
    return plt


def png(fig) -> bytes:
    """A matplotlib figure -> PNG bytes (the figure is closed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _np_image(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _canvas(rows: Sequence[tuple[str, torch.Tensor]], size: int, pad: int, gap: int) -> np.ndarray:
    """The rows' images tiled on a white uint8 canvas (each resized to ``size``)."""
    ncols = max(1, max(int(r.shape[0]) for _, r in rows))
    canvas = np.full((len(rows) * (size + pad + gap), ncols * (size + pad), 3), 255, np.uint8)
    for i, (_, imgs) in enumerate(rows):
        if imgs.shape[-1] != size:
            imgs = torch.nn.functional.interpolate(imgs.float(), size=size, mode="nearest")
        for j in range(imgs.shape[0]):
            y, x = i * (size + pad + gap), j * (size + pad)
            canvas[y:y + size, x:x + size] = _np_image(imgs[j])
    return canvas


def grid(rows: Sequence[tuple[str, torch.Tensor]], titles: Optional[Sequence[Sequence[str]]] = None,
         suptitle: str = "", cell: float = 1.3) -> bytes:
    """Rows of images ([N, 3, H, W] each) with a label per row (and optional per-image captions) -> PNG bytes.
    The images are tiled into one picture (one imshow: quick even with many cells)."""
    plt = pyplot()
    size = max(int(r.shape[-1]) for _, r in rows)
    pad = max(2, size // 16)
    gap = size // 3 if titles is not None else 0  # room for the captions under each row
    canvas = _canvas(rows, size, pad, gap)
    ncols = canvas.shape[1] // (size + pad)
    fig = plt.figure(figsize=(cell * ncols + 1.4, cell * len(rows) * (1 + gap / size) + 0.5))
    ax = fig.add_axes([0.12, 0.02, 0.86, 0.88])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for i, (label, _) in enumerate(rows):
        ax.text(-pad * 2, i * (size + pad + gap) + size / 2, label, ha="right", va="center", fontsize=8)
        for j, t in enumerate(titles[i] if titles is not None else ()):
            if t:
                ax.text(j * (size + pad) + size / 2, i * (size + pad + gap) + size + gap / 2, t, ha="center",
                        va="center", fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return png(fig)


def fmt(v: Any) -> str:
    """A figure for a caption: 3 decimals, "n/a" for None / NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.3f}"


def score_name(report) -> str:
    """What the judge's score is called in captions ("dlib distance" or "cosine")."""
    return "dlib distance" if "Euclidean" in report.thresholds.get("same_person_rule", "") else "cosine"


def score_histograms(report) -> bytes:
    """Histograms of the best identity scores of the person's (and the others') codes, G_s vs G_u -> PNG."""
    plt = pyplot()
    g = report.gallery
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
    ax.set_xlabel(f"best {score_name(report)} to the own photos ({report.protocol['identity']})")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title("identity scores, before vs after", fontsize=9)
    fig.tight_layout()
    return png(fig)


def loss_figure(report) -> bytes:
    """The erase's loss terms from the patch metadata (or a note that the patch carries none) -> PNG."""
    plt = pyplot()
    hist = report.gallery.get("loss_history")
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
    return png(fig)


def make_figures(report) -> dict[str, bytes]:
    """{file name: PNG bytes}: each registered metric family's figures (person.png, held_out.png,
    histograms.png, attacks.png, leakage.png: those whose data the report has), then loss.png."""
    pyplot()  # the 'audit' extra is needed even when no family has a figure
    figs: dict[str, bytes] = {}
    for family in METRIC_FAMILIES.values():
        figs.update(family.figures(report))
    figs["loss.png"] = loss_figure(report)
    return figs


def _captions() -> dict[str, str]:
    caps = {n: c for f in METRIC_FAMILIES.values() for n, c in f.figure_captions.items()}
    caps["loss.png"] = "Erase losses"
    return caps


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}img{max-width:100%}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}.pass{background:#d9f2d9}.fail{background:#f8d0d0}
.none{background:#eee;color:#555}summary{cursor:pointer;font-weight:bold}"""


def _verdict_section(report) -> str:
    """Per question, a table of its figures: value, threshold, pass / fail."""
    from .verdicts import QUESTIONS, verdicts

    e = html.escape
    found = verdicts(report)
    word = {True: ("pass", "pass"), False: ("fail", "FAIL"), None: ("none", "—")}
    parts = []
    for q, question in QUESTIONS.items():
        rows = [v for v in found if v.question == q]
        if not rows:
            continue
        ok = all(v.passed is not False for v in rows)
        if all(v.passed is None for v in rows):
            verdict = "not measured"
        elif q == "attacks":  # the question is asked the other way round: passing means "no"
            verdict = "no" if ok else "YES: at least one attack does"
        else:
            verdict = "yes" if ok else "NO"
        cells = "".join(
            f"<tr class='{word[v.passed][0]}'><td>{e(v.label)}<br><code>{e(v.figure)}</code></td><td>{fmt(v.value)}"
            f"</td><td>{e(v.threshold)}</td><td>{word[v.passed][1]}</td><td>{e(v.note)}</td></tr>" for v in rows)
        parts.append(f"<h3>{e(question)} <span>{e(verdict)}</span></h3><table><tr><th>figure</th><th>value</th>"
                     f"<th>threshold</th><th>verdict</th><th>note</th></tr>{cells}</table>")
    n_pass, n_fail = sum(v.passed is True for v in found), sum(v.passed is False for v in found)
    head = f"<p>{n_pass} checks pass, {n_fail} fail, {len(found) - n_pass - n_fail} not measured or without threshold.</p>"
    return "<h2>Verdicts</h2>" + head + "".join(parts)


def _comparison_section(report) -> str:
    """The side-by-side table of details["comparison"] (base, patched, reference, differences), or ""."""
    rows = report.details.get("comparison") or []
    if not rows:
        return ""
    e = html.escape
    name = (report.networks.get("reference") or {}).get("name")
    body = "".join(f"<tr><td><code>{e(r['figure'])}</code><br>{e(r['meaning'])}</td><td>{fmt(r['before'])}</td>"
                   f"<td>{fmt(r['after'])}</td><td>{fmt(r['reference'])}</td><td>{fmt(r['after_minus_reference'])}</td>"
                   f"<td>{fmt(r['reference_minus_before'])}</td><td>{e(r['higher_is'])}</td></tr>" for r in rows)
    ref = f"reference <b>{e(str(name))}</b>" if name else "no reference model given"
    if (report.details.get("reference") or {}).get("stand_in"):
        ref += (" — <b>a stand-in with the base's own weights, not a model that never learnt the person</b>: its "
                "figures are the base's, every difference is the patch's")
    return (f"<h2>Side by side</h2><p>Each figure through the base, the patched model and the {ref}, measured the "
            "same way through each.</p><table><tr><th>figure</th><th>base (G_s)</th><th>patched (G_u)</th>"
            "<th>reference</th><th>patched − reference</th><th>reference − base</th><th>higher is</th></tr>"
            f"{body}</table>")


def render_html(report, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page (nothing fetched: every figure is a ``data:image/png;base64`` URI), in the order
    an auditor reads: the verdict per question (figure, threshold, pass / fail), the side-by-side comparison with a
    reference model, the pictures, the metric table, then the protocol, rules, networks and digests folded away."""
    e = html.escape
    rows = "".join(f"<tr><td><code>{e(k)}</code></td><td>{fmt(v)}</td><td>{e(meaning_of(k))}</td>"
                   f"<td>{e(report.details.get('not_run', {}).get(k, ''))}</td></tr>"
                   for k, v in report.metrics.items())
    captions = _captions()
    imgs = "".join(f"<h3>{e(captions.get(n, n))}</h3><img alt='{e(n)}' src='data:image/png;base64,"
                   f"{base64.b64encode(b).decode()}'>" for n, b in figures.items())
    verdict = (report.details.get("leakage") or {}).get("verdict", "the leakage probe was not run")
    skipped = "".join(f"<li>{e(s['role'])}: {e(s['photo'])} — {e(s['reason'])}</li>"
                      for s in report.details.get("skipped", []))
    counts = report.details.get("counts", {})
    block = lambda obj: f"<pre>{e(json.dumps(obj, indent=2, default=str))}</pre>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>guide_unlearn audit — {e(report.protocol['name'])}</title>
<style>{_STYLE}</style></head><body>
<h1>Erasure audit</h1>
<p>Patch {e(str(report.details.get('patch', {}).get('patch_id')))}; protocol <b>{e(report.protocol['name'])}</b>
(identity: {e(str(report.protocol.get('identity')))}); photos: request {counts.get('request')}, held out
{counts.get('held_out')}, others {counts.get('others')}, real {counts.get('real')}, skipped {counts.get('skipped')}.
Audit time {report.seconds.get('total', 0):.1f} s. Every figure is a statement about the identity network named here;
the Fréchet distances are <b>{e(report.protocol['feature_space'])}</b>.</p>
<p><b>Leakage:</b> {e(verdict)}.</p>
{_verdict_section(report)}
{_comparison_section(report)}
<h2>Pictures</h2>
{imgs}
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th><th>not run because</th></tr>{rows}</table>
<h2>Skipped photos</h2><ul>{skipped or '<li>none</li>'}</ul>
<details><summary>Protocol, same-person rules, networks and digests, time</summary>
<h3>Protocol</h3><p>{e(report.protocol['name'])} (version {e(str(report.protocol['version']))}):
{e(report.protocol['description'])}.</p>
<h3>Same-person rules</h3>{block(report.thresholds)}
<h3>Networks</h3>{block(report.networks)}
<h3>Time (seconds)</h3>{block(report.seconds)}
</details>
</body></html>
"""
