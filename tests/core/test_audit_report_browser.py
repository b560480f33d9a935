"""report.html in a real browser: headless Chromium (Debian's ``chromium`` package) renders it to a PNG, every
picture loads and nothing is fetched from outside. Without Chromium the same page is checked statically only."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

import guide_unlearn
from guide_unlearn.config import EraseConfig
from guide_unlearn.images import tensor_to_pil
from guide_unlearn.testing import tiny_eraser

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Appended to a COPY of the report: after load, list each picture's decoded size and every resource fetched.
PROBE = """<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}; });
  var fetched = performance.getEntriesByType("resource").map(function (r) { return r.name; });
  var out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({images: imgs, fetched: fetched});
  document.body.appendChild(out);
});</script>"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A saved report with a reference model, strangers and the re-learning attack (every kind of picture)."""
    eraser = tiny_eraser("stylegan2", inverter_steps=3)
    g = torch.Generator().manual_seed(3)
    ws = eraser.generator.mapping(torch.randn(7, eraser.generator.z_dim, generator=g), None)
    pics = [tensor_to_pil(x) for x in eraser.synthesize(ws)]
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=3), measure=False, progress=False).patch
    report = guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:3], others=pics[3:5], strangers=pics[5:7],
                                 reference=tiny_eraser("stylegan2", inverter_steps=3), protocol="toy-v1", samples=4,
                                 projector_steps=2, leakage_starts=1, leakage_steps=1, relearn_steps=2,
                                 attacks=("reinvert", "leakage", "relearn"), progress=False)
    return report.save(tmp_path_factory.mktemp("audit") / "report")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        self.links += [v for k, v in attrs if k in ("href", "src", "action", "srcset", "poster") and v]


def test_the_report_page_embeds_every_picture_and_names_nothing_outside(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(page)
    assert len(refs.images) >= 8 and all(s.startswith("data:image/png;base64,") for s in refs.images)
    for src in refs.images:
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert all(link.startswith("data:") for link in refs.links)
    assert not {"script", "link", "iframe", "object", "embed"} & set(refs.tags)
    assert not re.search(r"url\(|@import|https?://", "".join(re.findall(r"<style>(.*?)</style>", page, re.S)))


def test_chromium_renders_the_report_with_every_picture_loaded_and_nothing_fetched(report_dir, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium); the page was checked statically")
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                        .replace("&amp;", "&"))
    assert len(result["images"]) >= 8
    for img in result["images"]:
        assert img["complete"] and img["width"] > 50 and img["height"] > 50, img
    assert result["fetched"] == []
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", (report_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120, cwd=tmp_path)
    picture = Image.open(shot).convert("L")
    assert picture.size == (1200, 3000)
    low, high = picture.getextrema()
    assert high - low > 100  # text and pictures, not a blank page
