"""guide-unlearn erase-batch: reading requests, sharding over 2 accelerate processes (same patches as 1), restart
after a kill, failure isolation, and the output-folder rules."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guide_unlearn.errors import InputError, SaveError
from guide_unlearn.pipelines.queue import MANIFEST, read_header, read_manifest, run_queue
from guide_unlearn.pipelines.request_lists import Request, make_units, read_requests, request_seed

ITER = ["--iterations", "3"]


def _requests(tmp_path, shared_dir, good=2, broken=True):
    """A REQUESTS folder: `good` people (one shared/faces photo each) and one request whose photo is corrupt."""
    photos = sorted((shared_dir / "faces" / "deepface_train").glob("*.jpg"))[:good]
    root = tmp_path / "requests"
    for k, p in enumerate(photos):
        (root / f"person-{k}").mkdir(parents=True)
        shutil.copy(p, root / f"person-{k}" / p.name)
    if broken:
        (root / "person-bad").mkdir(parents=True)
        (root / "person-bad" / "photo.jpg").write_bytes(b"not a jpeg")
    return root


def _cli(args, launcher=None, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = (launcher or [sys.executable, "-m", "guide_unlearn.cli"]) + args
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _tensors(folder: Path) -> bytes:
    return (folder / "adapter_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, shared_dir):
    """The queue run once in this process: (REQUESTS folder, its output folder). Tests copy the output."""
    tmp = tmp_path_factory.mktemp("queue")
    req = _requests(tmp, shared_dir)
    summary = run_queue(read_requests(req), "tiny-stylegan2", tmp / "one", overrides={"seed": 0, "iterations": 3},
                        progress=False)
    assert summary["done"] == 2 and summary["failed"] == 1 and summary["processes"] == 1
    return req, tmp / "one"


@pytest.mark.slow
def test_two_accelerate_processes_give_the_same_patches_as_one_and_a_bad_request_fails_alone(tmp_path,
                                                                                                one_process_run):
    req, one = one_process_run
    # `accelerate launch --cpu` starts ONE process unless given an MPI hostfile (accelerate 1.x); on a machine
    # without GPUs `--multi_gpu` launches the processes through torchrun and they talk over gloo (MULTI_CPU).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "29517", "-m", "guide_unlearn.cli"]
    proc = _cli(["erase-batch", str(req), "--model", "tiny-stylegan2", "--out", str(tmp_path / "two"), "--quiet",
                 *ITER], launcher=launch)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["done"] == 2 and summary["failed"] == 1
    rows_one, rows_two = read_manifest(one), read_manifest(tmp_path / "two")
    assert [r["request_id"] for r in rows_two] == ["person-0", "person-1", "person-bad"]
    assert [r["status"] for r in rows_two] == ["done", "done", "failed"]
    assert "not a readable image" in rows_two[2]["error"] and "\n" not in rows_two[2]["error"]
    assert {r["process"] for r in rows_two} == {0, 1}  # really sharded
    assert [r["patch_id"] for r in rows_one] == [r["patch_id"] for r in rows_two]
    for rid in ("person-0", "person-1"):
        assert _tensors(one / rid) == _tensors(tmp_path / "two" / rid)  # bit-identical
    assert not (tmp_path / "two" / "person-bad").exists()


def test_a_rerun_after_a_kill_redoes_only_what_is_missing_and_removes_half_written_folders(tmp_path,
                                                                                           one_process_run):
    req, one = one_process_run
    out = tmp_path / "out"
    shutil.copytree(one, out)
    rows = read_manifest(out)
    kept_mtime = (out / "person-0" / "adapter_model.safetensors").stat().st_mtime_ns
    assert not (out / ".results").exists()  # a finished run folds every outcome into the manifest
    # what a kill during person-1 leaves: the other outcomes in .results/, no person-1 patch nor result, a
    # temporary folder, a header-only manifest
    (out / ".results").mkdir()
    for row in rows:
        if row["request_id"] != "person-1":
            (out / ".results" / f"{row['unit']}.json").write_text(json.dumps([row]))
    shutil.rmtree(out / "person-1")
    (out / ".person-1.tmp-0badc0de").mkdir()
    (out / ".person-1.tmp-0badc0de" / "adapter_model.safetensors").write_bytes(b"half")
    header = (out / MANIFEST).read_text().splitlines()[0]
    (out / MANIFEST).write_text(header + "\n")
    again = run_queue(read_requests(req), "tiny-stylegan2", out, overrides={"seed": 0, "iterations": 3},
                      progress=False)
    assert again["resumed"] and again["done"] == 2 and again["failed"] == 1
    assert again["redone_units"] == 2  # person-1 and the failed request; person-0 is complete
    assert (out / "person-0" / "adapter_model.safetensors").stat().st_mtime_ns == kept_mtime  # skipped
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(read_manifest(out)) == strip(rows)  # same patches, same rows
    assert not [p for p in out.iterdir() if ".tmp-" in p.name] and not (out / ".results").exists()


@pytest.mark.slow
def test_joint_groups_make_one_patch_listing_their_requests(tmp_path, shared_dir):
    req = _requests(tmp_path, shared_dir, good=2)
    out = tmp_path / "out"
    summary = run_queue(read_requests(req), "tiny-stylegan2", out, joint=2,
                        overrides={"seed": 0, "iterations": 3}, progress=False)
    assert summary["units"] == 2 and summary["done"] == 2 and summary["failed"] == 1
    rows = {r["request_id"]: r for r in read_manifest(out)}
    group = rows["person-0"]["patch"]
    assert group.startswith("joint-0000-") and rows["person-1"]["patch"] == group
    meta = json.loads((out / group / "forget_patch.json").read_text())
    assert [e["request_id"] for e in meta["requests"]] == ["person-0", "person-1"]
    assert rows["person-bad"]["status"] == "failed" and rows["person-bad"]["patch"] is None


def test_a_folder_holding_user_files_is_never_replaced_even_with_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"user data")
    requests = [Request("a", (tmp_path / "missing.jpg",))]
    for overwrite in (False, True):
        with pytest.raises(SaveError, match="not an erase-batch output"):
            run_queue(requests, "tiny-stylegan2", out, overwrite=overwrite, progress=False)
        assert (out / "holiday.jpg").read_bytes() == b"user data" and not (out / MANIFEST).exists()


def test_another_queues_output_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    requests = [Request("a", (tmp_path / "missing.jpg",))]
    assert run_queue(requests, "tiny-stylegan2", out, progress=False)["failed"] == 1
    with pytest.raises(SaveError, match="another model"):
        run_queue(requests, "tiny-eg3d", out, progress=False)
    assert read_header(out)["model"] == "tiny-stylegan2"
    assert run_queue(requests, "tiny-eg3d", out, overwrite=True, progress=False)["failed"] == 1
    assert read_header(out)["model"] == "tiny-eg3d"
    (out / "notes.txt").write_text("mine")  # a user file inside the output: now it is never replaced
    with pytest.raises(SaveError, match="did not write"):
        run_queue(requests, "tiny-stylegan2", out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_requests_read_from_folder_csv_and_jsonl_agree(tmp_path):
    (tmp_path / "dir" / "b").mkdir(parents=True)
    (tmp_path / "dir" / "a").mkdir()
    for p in ("dir/a/1.jpg", "dir/a/2.png", "dir/b/1.jpg"):
        (tmp_path / p).write_bytes(b"x")
    (tmp_path / "dir" / "a" / "notes.txt").write_text("ignored")
    (tmp_path / "r.csv").write_text("request_id,photo\na,dir/a/1.jpg\nb,dir/b/1.jpg\na,dir/a/2.png\n")
    (tmp_path / "r.jsonl").write_text('{"request_id": "b", "photo": "dir/b/1.jpg"}\n'
                                      '{"request_id": "a", "photos": ["dir/a/1.jpg", "dir/a/2.png"]}\n')
    folder = read_requests(tmp_path / "dir")
    assert folder == read_requests(tmp_path / "r.csv") == read_requests(tmp_path / "r.jsonl")
    assert [r.request_id for r in folder] == ["a", "b"] and len(folder[0].photos) == 2


@pytest.mark.parametrize("content, message", [
    ('{"request_id": "a", "photo": "x.jpg"}\n{"request_id": "a", "photo": "y.jpg"}\n', "twice"),
    ('{"request_id": "../up", "photo": "x.jpg"}\n', "safe folder name"),
    ("", "no requests"),
])
def test_bad_request_lists_are_refused_before_anything_runs(tmp_path, content, message):
    (tmp_path / "r.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        read_requests(tmp_path / "r.jsonl")


def test_a_request_seed_depends_on_its_id_only_and_groups_on_the_sorted_ids():
    assert request_seed("alice") == request_seed("alice") != request_seed("bob")
    assert request_seed("alice", 1) != request_seed("alice", 0)
    reqs = [Request(i, ()) for i in ("a", "b", "c")]
    assert [u.name for u in make_units(reqs)] == ["a", "b", "c"]
    groups = make_units(reqs, joint=2)
    assert [[r.request_id for r in u.requests] for u in groups] == [["a", "b"], ["c"]]
    assert groups[0].name != make_units([Request("a", ()), Request("x", ())], joint=2)[0].name


def _request_folder(tmp_path):
    (tmp_path / "q" / "good").mkdir(parents=True)
    (tmp_path / "q" / "good" / "1.jpg").write_bytes(b"x")
    (tmp_path / "q" / "bad").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    return tmp_path / "q"


@pytest.mark.parametrize("hostile, reason", [("link-out", "outside"), ("fifo", "not a regular file"),
                                             ("dev-zero", "outside"), ("folder-link", "is a link")])
def test_a_hostile_entry_in_a_request_folder_fails_that_request_alone(tmp_path, hostile, reason):
    """Request folders are listed through the reading gate: a link out of the folder, a FIFO, a link to /dev/zero
    or a request folder that is itself a link fails its request with a reason; the others still run."""
    q = _request_folder(tmp_path)
    if hostile == "link-out":
        (q / "bad" / "x.jpg").symlink_to(tmp_path / "outside.jpg")
    elif hostile == "fifo":
        os.mkfifo(q / "bad" / "x.jpg")
    elif hostile == "dev-zero":
        (q / "bad" / "x.jpg").symlink_to("/dev/zero")
    else:
        (q / "bad").rmdir()
        (q / "bad").symlink_to(tmp_path)
    requests = {r.request_id: r for r in read_requests(q)}
    assert requests["good"].problem is None and len(requests["good"].photos) == 1
    assert reason in requests["bad"].problem and requests["bad"].photos == ()


def test_a_request_folder_is_read_one_level_deep_and_stray_file_links_beside_it_are_ignored(tmp_path):
    q = _request_folder(tmp_path)
    (q / "good" / "nested").mkdir()
    (q / "good" / "nested" / "2.jpg").write_bytes(b"x")
    (q / "notes.txt").symlink_to(tmp_path / "outside.jpg")
    (q / "my notes").symlink_to(tmp_path / "nowhere")  # a broken link named like no request could be
    requests = {r.request_id: r for r in read_requests(q)}
    assert sorted(requests) == ["bad", "good"] and len(requests["good"].photos) == 1
