"""dlib's recogniser as the real metric on shared photos, and face-api's copy of it agreeing with it."""

import itertools

import numpy as np
import pytest
import torch

from guide_unlearn.faces import align_face, detect_faces

pytest.importorskip("dlib")

from guide_unlearn.adapters.identity import (DLIB_COSINE_THRESHOLD, DLIB_THRESHOLD, dlib_distance,  # noqa: E402
                                             load_identity_model, same_network)


# facenet-pytorch's angelina_jolie_aligned.png and deepface's img1.jpg show the same actress (distance 0.52):
# a true match, so that pair is left out of the different-people set.
SAME_PERSON_ACROSS_FOLDERS = {("angelina_jolie_aligned.png", "img1.jpg")}


@pytest.fixture(scope="module")
def chips(shared_dir):
    """dlib150 chips from MTCNN landmarks: GUIDE's 5 photos of one person; one photo each of other people
    (facenet_pytorch_test, deepface_train); GFPGAN's 4 degraded old-photo crops of 4 more people."""
    faces = shared_dir / "faces"
    same = sorted((faces / "guide_celebahq512").glob("*.jpg"))
    others = sorted((faces / "facenet_pytorch_test").glob("*.png")) + sorted((faces / "deepface_train").glob("*.jpg"))
    degraded = sorted((faces / "gfpgan_cropped").glob("*.png"))

    def chip(path):
        return align_face(path, detect_faces(path)[0], "dlib150")

    names = [p.name for p in same[:1] + others]
    return [chip(p) for p in same], [chip(p) for p in same[:1] + others], names, [chip(p) for p in degraded]


@pytest.fixture(scope="module")
def dlib_model(shared_dir):
    return load_identity_model("dlib", str(shared_dir / "weights" / "dlib"))


@pytest.mark.slow
def test_dlib_separates_one_person_from_other_people(chips, dlib_model):
    same, different, names, degraded = chips
    d_same = dlib_distance(dlib_model.descriptors(same), dlib_model.descriptors(same))[np.triu_indices(5, 1)]
    full = dlib_distance(dlib_model.descriptors(different), dlib_model.descriptors(different))
    pairs = [(i, j) for i, j in itertools.combinations(range(len(names)), 2)
             if (names[i], names[j]) not in SAME_PERSON_ACROSS_FOLDERS]
    d_diff = np.array([full[i, j] for i, j in pairs])
    to_guide = dlib_distance(dlib_model.descriptors(degraded), dlib_model.descriptors(same[:1]))[:, 0]
    within_degraded = dlib_distance(dlib_model.descriptors(degraded), dlib_model.descriptors(degraded))
    within_degraded = within_degraded[np.triu_indices(len(degraded), 1)]
    print(f"\ndlib Euclidean (raw descriptors, threshold 0.6): same person mean {d_same.mean():.3f} max "
          f"{d_same.max():.3f}; {len(names)} different people, {len(pairs)} pairs: mean {d_diff.mean():.3f} "
          f"min {d_diff.min():.3f}; gfpgan degraded crops vs GUIDE's person min {to_guide.min():.3f}, among "
          f"themselves min {within_degraded.min():.3f} ({(within_degraded < DLIB_THRESHOLD).sum()} of "
          f"{len(within_degraded)} pairs under 0.6); Angelina pair {full[names.index('angelina_jolie_aligned.png'), names.index('img1.jpg')]:.3f}")
    assert d_same.mean() < DLIB_THRESHOLD and d_same.max() < DLIB_THRESHOLD
    assert d_diff.min() > DLIB_THRESHOLD
    assert to_guide.min() > DLIB_THRESHOLD
    assert d_diff.mean() - d_same.mean() > 0.3


@pytest.mark.slow
def test_raw_dlib_descriptors_are_not_unit_length_but_embed_is(chips, dlib_model):
    raw = dlib_model.descriptors(chips[0])
    norms = np.linalg.norm(raw, axis=1)
    print(f"\nraw dlib descriptor norms: {np.round(norms, 3).tolist()}")
    assert ((norms > 1.2) & (norms < 1.7)).all()
    emb = dlib_model.embed(chips[0])
    assert emb.shape == (5, 128) and torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    cos = (emb @ emb.T)[np.triu_indices(5, 1)]
    assert (cos > DLIB_COSINE_THRESHOLD).all()


@pytest.mark.slow
def test_faceapi_agrees_with_dlib_on_the_same_pairs(shared_dir, chips, dlib_model):
    faceapi = load_identity_model("faceapi", str(shared_dir / "weights" / "faceapi_tfjs"))
    assert faceapi.differentiable and not dlib_model.differentiable
    assert same_network("faceapi", "dlib") and not same_network("faceapi", "curricularface")
    crops = chips[0] + chips[1][1:] + chips[3]
    d_dlib = dlib_distance(dlib_model.descriptors(crops), dlib_model.descriptors(crops))
    with torch.no_grad():
        raw = faceapi.descriptors(crops).double().numpy()
    d_api = dlib_distance(raw, raw)
    iu = np.triu_indices(len(crops), 1)
    gap = np.abs(d_api - d_dlib)[iu]
    agree = ((d_api[iu] < DLIB_THRESHOLD) == (d_dlib[iu] < DLIB_THRESHOLD)).mean()
    print(f"\nfaceapi vs dlib on {len(iu[0])} pairs: max |distance gap| {gap.max():.4f}, same decision on "
          f"{agree:.1%}; descriptor gap {np.linalg.norm(raw - dlib_model.descriptors(crops), axis=1).max():.3f}")
    assert gap.max() < 0.05 and agree == 1.0


def test_faceapi_gives_gradients_through_tensor_input(shared_dir):
    faceapi = load_identity_model("faceapi", str(shared_dir / "weights" / "faceapi_tfjs"))
    x = torch.zeros(1, 3, 150, 150, requires_grad=True)
    faceapi.embed(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_name_and_missing_weights_are_typed_errors(tmp_path):
    from guide_unlearn.errors import BackendUnavailableError, ConfigError

    with pytest.raises(ConfigError, match="faceapi"):
        load_identity_model("vggface")
    with pytest.raises(BackendUnavailableError, match="weights not found"):
        load_identity_model("dlib", str(tmp_path / "absent.dat"))


@pytest.mark.slow
def test_descriptors_do_not_depend_on_the_thread_count(chips):
    from guide_unlearn.adapters.identity.dlib_metric import DlibIdentity

    same, _, _, _ = chips
    model = DlibIdentity()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.descriptors(same)
        torch.set_num_threads(2)
        two = model.descriptors(same)
    finally:
        torch.set_num_threads(threads)
    assert one.shape == (5, 128) and np.array_equal(one, two)
