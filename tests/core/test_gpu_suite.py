"""The GPU benchmark suite's --dry-run (tiny models, CPU, one process) runs end to end, so the script does not rot."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_suite  # noqa: E402


def test_gpu_suite_dry_run_writes_one_figure_per_architecture(tmp_path, capsys):
    out = tmp_path / "figures.jsonl"
    assert gpu_suite.main(["--dry-run", "--people", "2", "--out", str(out)]) == 0
    figures = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {f["figure"]: f for f in figures}
    assert {"eg3d-tiny", "stylegan2-tiny", "eg3d-tiny-many"} <= set(by_name)
    for name in ("eg3d-tiny", "stylegan2-tiny"):
        f = by_name[name]
        assert f["ours_ms_per_iter"] > 0 and f["reference_ms_per_iter"] > 0
        assert f["speedup"] == round(f["reference_ms_per_iter"] / f["ours_ms_per_iter"], 3) or \
            abs(f["speedup"] - f["reference_ms_per_iter"] / f["ours_ms_per_iter"]) < 0.01
        assert f["ours_seconds_per_identity"] == round(f["ours_ms_per_iter"] * f["ours_iterations"] / 1000, 2) or \
            abs(f["ours_seconds_per_identity"] - f["ours_ms_per_iter"] * f["ours_iterations"] / 1000) < 0.02
        assert f["patch_bytes"] > 0
    many = by_name["eg3d-tiny-many"]
    assert "skipped" in many or (many["people"] == 2 and many["ms_per_iter"] > 0)
    assert "figure" in capsys.readouterr().err  # the table
