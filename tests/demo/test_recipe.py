"""The demo model's training recipe: seeded, resumable, and its command line runs end to end (a few steps)."""

from __future__ import annotations

import json

import pytest
import torch

from guide_unlearn.errors import ConfigError
from guide_unlearn.recipes.demo_faces import train as T
from guide_unlearn.errors import InputError
from guide_unlearn.recipes.demo_faces.data import (HELD_OUT, FaceSet, leave_out, list_photos, person_of,
                                                    read_people_file)

TINY = dict(resolution=16, z_dim=8, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32, batch=4,
            threads=1, save_every=3, log_every=1)


def _images(n=6, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g) * 2 - 1


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


@pytest.mark.slow
def test_same_seed_same_weights():
    cfg = T.TrainConfig(iterations=4, **TINY)
    a, ca, _ = T.train(cfg, _images())
    b, cb, _ = T.train(cfg, _images())
    assert torch.equal(_flat(a), _flat(b)) and torch.equal(ca, cb)


def test_other_seed_other_weights():
    a, _, _ = T.train(T.TrainConfig(iterations=2, **TINY), _images())
    b, _, _ = T.train(T.TrainConfig(iterations=2, seed=1, **TINY), _images())
    assert not torch.equal(_flat(a), _flat(b))


class _Stop(Exception):
    pass


def _stop_at(step):
    def log(rec):
        if rec["step"] >= step:
            raise _Stop

    return log


def test_resume_equals_uninterrupted(tmp_path):
    straight, codes, _ = T.train(T.TrainConfig(iterations=6, **TINY), _images())
    # Stop the run at step 3 (its state is saved there), then resume in a new call from the saved state.
    with pytest.raises(_Stop):
        T.train(T.TrainConfig(iterations=6, **TINY), _images(), tmp_path, log=_stop_at(3))
    resumed, codes2, _ = T.train(T.TrainConfig(iterations=6, **TINY), _images(), tmp_path)
    assert torch.allclose(_flat(straight), _flat(resumed), atol=1e-6)
    assert torch.allclose(codes, codes2, atol=1e-6)


def test_resume_with_other_config_refused(tmp_path):
    T.train(T.TrainConfig(iterations=3, **TINY), _images(), tmp_path)
    with pytest.raises(ConfigError, match=r"another config \(lr differ\)"):
        T.train(T.TrainConfig(iterations=3, lr=1e-3, **TINY), _images(), tmp_path)


def test_resume_with_other_threads_or_save_interval_is_accepted(tmp_path):
    """Threads and the save / log intervals say how a run is carried out, not what it trains: a resumption may
    change them (a run started on one core can go on with two)."""
    T.train(T.TrainConfig(iterations=3, **TINY), _images(), tmp_path)
    other = {**TINY, "threads": TINY["threads"] + 1, "save_every": 2, "log_every": 7}
    _, _, summary = T.train(T.TrainConfig(iterations=3, **other), _images(), tmp_path)
    assert summary["iterations"] == 3


@pytest.mark.slow
def test_loss_goes_down():
    """Four smooth images (4×4 noise upsampled): 100 steps fit them clearly better than the first step."""
    smooth = torch.nn.functional.interpolate(_images(n=4, res=4), size=16, mode="bilinear", align_corners=False)
    logs = []
    T.train(T.TrainConfig(iterations=100, **TINY), smooth, log=logs.append)
    assert logs[-1]["loss"] < 0.6 * logs[0]["loss"]


def test_pull_draws_each_persons_codes_together():
    """Stage 2: photos 0-2 show one person; their codes end close together, the others stay apart."""
    cfg = T.TrainConfig(iterations=2, pull_iterations=60, pull_radius=0.1, pull_weight=10.0, pull_code_lr=0.3,
                        **TINY)
    images = _images()
    g, codes, _ = T.train(cfg, images)
    codes = codes + torch.randn(codes.shape, generator=torch.Generator().manual_seed(4))  # spread them out
    people = ["a", "a", "a", "b", "c", "d"]
    _, pulled, summary = T.pull_people(g, codes, images, people, cfg)
    before = torch.pdist(codes[:3]).max()
    assert summary["largest_person_spread"] == pytest.approx(float(torch.pdist(pulled[:3]).max()), abs=1e-3)
    assert torch.pdist(pulled[:3]).max() < 0.2 * before
    assert torch.pdist(pulled[3:]).min() > torch.pdist(pulled[:3]).max()  # only the person is drawn together


def test_pull_stage_without_repeated_people_still_fine_tunes():
    """A run that leaves out the only person with several photos (an oracle) gets the same stage-2 steps, with
    no pull term: the weights and codes move, and the summary has no person spread."""
    cfg = T.TrainConfig(iterations=1, pull_iterations=5, **TINY)
    g, codes, _ = T.train(cfg, _images())
    before = _flat(g).clone()
    logs = []
    g2, moved, summary = T.pull_people(g, codes, _images(), list("abcdef"), cfg, log=logs.append)
    assert summary["pull_iterations"] == 5 and summary["largest_person_spread"] is None
    assert not torch.equal(moved, codes) and not torch.equal(_flat(g2), before)
    assert all(rec["pull"] == 0.0 for rec in logs)


def test_pull_stage_is_skipped_with_zero_pull_iterations():
    cfg = T.TrainConfig(iterations=1, pull_iterations=0, **TINY)
    g, codes, _ = T.train(cfg, _images())
    _, same, summary = T.pull_people(g, codes, _images(), list("aabcde"), cfg)
    assert torch.equal(same, codes) and summary == {"pull_iterations": 0}


def test_stage_2_settings_do_not_block_resuming_stage_1(tmp_path):
    T.train(T.TrainConfig(iterations=3, **TINY), _images(), tmp_path)
    _, _, summary = T.train(T.TrainConfig(iterations=3, pull_iterations=7, pull_radius=2.0, **TINY), _images(),
                            tmp_path)
    assert summary["iterations"] == 3


def test_pca_codes_are_whitened():
    codes = T.pca_codes(_images(n=20), 8)
    assert codes.shape == (20, 8)
    assert torch.allclose(codes.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(codes.std(0), torch.ones(8), atol=1e-5)


def test_schedules():
    cfg = T.TrainConfig(iterations=100, constant_fraction=0.4, code_noise=0.3, code_noise_until=0.5, **TINY)
    assert T.lr_factor(0, cfg) == 1.0 and T.lr_factor(39, cfg) == 1.0
    assert T.lr_factor(70, cfg) == pytest.approx(0.5) and T.lr_factor(100, cfg) == pytest.approx(0.0)
    assert T.noise_std(0, cfg) == pytest.approx(0.3) and T.noise_std(25, cfg) == pytest.approx(0.15)
    assert T.noise_std(60, cfg) == 0.0


def test_config_file_is_the_shipped_run():
    cfg = T.TrainConfig.from_json(T.Path(T.__file__).with_name("config.json"))
    model_cfg = json.loads((T.Path(T.__file__).parents[2] / "guide_unlearn/models/demo_faces/config.json").read_text())
    for key, value in cfg.generator_config().items():
        assert model_cfg[key] == value, key


def test_config_rejects_unknown_keys(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"iterations": 5, "learning_rate": 1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        T.TrainConfig.from_json(f)


def test_bad_image_shape_refused():
    with pytest.raises(ConfigError, match=r"\[N, 3, 16, 16\]"):
        T.train(T.TrainConfig(iterations=1, **TINY), torch.zeros(2, 3, 32, 32))


def test_training_photos_leave_out_aligned_5(shared_dir):
    names = list_photos(shared_dir / "faces")
    assert HELD_OUT[0] not in names
    assert "guide_celebahq512/aligned_1.jpg" in names and len(names) == 127
    assert person_of("guide_celebahq512/aligned_3.jpg") == person_of("guide_celebahq512/aligned_1.jpg")
    assert person_of("stargan_v2_celebahq/000001.jpg") != person_of("stargan_v2_celebahq/000002.jpg")


@pytest.mark.slow
def test_command_line_smoke_run(shared_dir, tmp_path):
    """The real recipe (its config, its data code) for a few steps on four photos: every output is written and
    the exported folder loads as a registry generator."""
    from guide_unlearn.pipelines.loading import load_generator

    out = tmp_path / "run"
    assert T.main(["--out", str(out), "--shared", str(shared_dir), "--iterations", "3", "--pull-iterations", "2",
                   "--max-photos", "4"]) == 0
    faces = FaceSet.load(out / "faces.npz")
    assert faces.names == list_photos(shared_dir / "faces")[:4]  # without --exclude: the shipped run's photos
    assert len(faces) == 4 and faces.images.shape == (4, 3, 64, 64)
    assert faces.descriptors.shape == (4, 128) and faces.landmarks.shape == (4, 5, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["photos"] == 4
    g = load_generator(out / "model")
    assert g.img_resolution == 64 and g.num_ws == 10 and next(g.parameters()).dtype == torch.float32
    assert torch.isfinite(g.w_avg).all() and g.w_avg.abs().sum() > 0
    from guide_unlearn.adapters.projector import CODE_BOOK_FILE, CodeBook

    book = CodeBook.load(out / "model" / CODE_BOOK_FILE)  # the dlib describer named in the file
    assert len(book) == 4 and book.z_dim == g.z_dim and book.threshold == 0.6
    index, dist = book.match(faces.images)  # a training crop finds its own code
    assert index.tolist() == [0, 1, 2, 3] and dist.max() < 1e-3  # descriptors are stored as float32


# -- leaving people out (the oracle models) ---------------------------------------------------------------------

ORACLE_8 = T.Path(T.__file__).with_name("oracle_8.txt")
NAMES = ["a/1.jpg", "b/2.png", "guide_celebahq512/aligned_1.jpg", "guide_celebahq512/aligned_2.jpg", "c/3.jpg"]


def test_exclude_removes_every_photo_of_a_one_person_folder_and_nothing_else():
    kept, removed = leave_out(NAMES, ["guide_celebahq512", "b/2.png"])
    assert kept == ["a/1.jpg", "c/3.jpg"]
    assert removed == ["b/2.png", "guide_celebahq512/aligned_1.jpg", "guide_celebahq512/aligned_2.jpg"]


def test_exclude_nothing_keeps_the_list_and_its_order():
    kept, removed = leave_out(NAMES, [])
    assert kept == NAMES and removed == []


def test_exclude_name_matching_no_photo_is_an_error():
    with pytest.raises(InputError, match="matches no training photo"):
        leave_out(NAMES, ["a/1.jpg", "a/9.jpg"])


def test_exclude_one_photo_of_a_person_with_several_is_an_error():
    """Leaving out aligned_1 alone would keep the person in the model through aligned_2..4."""
    with pytest.raises(InputError, match="--exclude guide_celebahq512"):
        leave_out(NAMES, ["guide_celebahq512/aligned_1.jpg"])
    with pytest.raises(InputError, match="--exclude guide_celebahq512"):  # the held-out photo is theirs too
        leave_out(NAMES, ["guide_celebahq512/aligned_5.jpg"])


def test_exclude_folder_of_several_people_is_an_error():
    with pytest.raises(InputError, match="folder of 2 different people"):
        leave_out(NAMES + ["a/4.jpg"], ["a"])


def test_people_file_reads_names_and_skips_comments(tmp_path):
    f = tmp_path / "people.txt"
    f.write_text("# who\nguide_celebahq512\n\n  b/2.png  # one photo\n")
    assert read_people_file(f) == ["guide_celebahq512", "b/2.png"]
    f.write_text("# nobody\n")
    with pytest.raises(InputError, match="names no person"):
        read_people_file(f)


def test_oracle_8_leaves_out_the_guide_person_and_seven_one_photo_people(shared_dir):
    """The shipped list: all 4 training photos of the GUIDE person and 7 single photos from 7 source folders;
    the other 116 photos keep their order."""
    names = list_photos(shared_dir / "faces")
    people = read_people_file(ORACLE_8)
    kept, removed = leave_out(names, people)
    assert len(people) == 8 and people[0] == "guide_celebahq512"
    assert len(removed) == 11 and len(kept) == 116
    assert {n for n in removed if n.startswith("guide_celebahq512/")} == {
        f"guide_celebahq512/aligned_{i}.jpg" for i in range(1, 5)}
    assert set(removed) - {f"guide_celebahq512/aligned_{i}.jpg" for i in range(1, 5)} == set(people[1:])
    assert len({p.split("/")[0] for p in people}) == 8
    assert kept == [n for n in names if n not in set(removed)]
    assert leave_out(names, []) == (names, [])


def test_command_line_rejects_an_unknown_person_before_writing(shared_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="nobody/0.jpg"):
        T.main(["--out", str(out), "--shared", str(shared_dir), "--iterations", "1", "--exclude", "nobody/0.jpg"])
    assert not out.exists()


@pytest.mark.slow
def test_command_line_leaves_the_people_out_of_data_and_code_book(shared_dir, tmp_path):
    """Two photos, the first of them excluded: the face set, the summary and the code book hold only the
    other; the same run folder then refuses a command that selects other photos."""
    first, second, third = list_photos(shared_dir / "faces")[:3]
    out = tmp_path / "run"
    assert T.main(["--out", str(out), "--shared", str(shared_dir), "--iterations", "2", "--pull-iterations", "1",
                   "--max-photos", "2", "--exclude", first]) == 0
    faces = FaceSet.load(out / "faces.npz")
    assert faces.names == [second, third]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["excluded"] == [first] and summary["photos"] == 2
    from guide_unlearn.adapters.projector import CODE_BOOK_FILE, CodeBook

    assert len(CodeBook.load(out / "model" / CODE_BOOK_FILE)) == 2
    with pytest.raises(ConfigError, match="new --out folder"):
        T.main(["--out", str(out), "--shared", str(shared_dir), "--iterations", "2", "--max-photos", "2"])
