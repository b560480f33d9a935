"""The contract every registered erase method keeps on every generator family, as peft's PeftCommonTester runs one
set of checks over every tuner: a 2-step erase records the method that ran; its patch saves and reloads; applying
then removing it restores the generator bit for bit; merging equals applying; the same seed gives the same bytes;
the card names the method; a run resumed after an interrupt gives the same patch.

To add a method to the table, add one row to METHODS: (name, its settings for a 2-step run on the tiny models,
how many people one run erases). Every family of FAMILIES runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from guide_unlearn import ForgetPatch, list_methods, patching
from guide_unlearn.resume import STATE_FILE
from guide_unlearn.testing import interrupted_at, tiny_eraser

FAMILIES = ("stylegan2", "eg3d")
METHODS: list[tuple[str, dict[str, Any], int]] = [
    ("lora", {}, 1),
    ("paper", {"target_distance": 1.0, "target_distance_relative": True}, 1),
    ("joint", {"persons_per_step": 1}, 2),  # two people, one visited per step
    ("sugar", {"persons_per_step": 1, "surrogate_steps": 2, "fisher_samples": 2}, 2),
    ("robust", {"iterations": 1, "adversarial_rounds": 1, "adversarial_iterations": 1, "attack_steps": 1,
                "attack_augmentations": 0, "round_attackers": ("scratch",), "bridge_samples": 1, "decoys": 1}, 1),
]


@dataclass(frozen=True)
class Case:
    family: str
    method: str
    settings: tuple[tuple[str, Any], ...]
    people: int

    def __str__(self) -> str:
        return f"{self.family}-{self.method}"


CASES = [Case(f, m, tuple(s.items()), p) for f in FAMILIES for m, s, p in METHODS]
IDS = [str(c) for c in CASES]


_ERASERS: dict[str, Any] = {}
_MADE: dict[Case, ForgetPatch] = {}


def _eraser(family: str):
    if family not in _ERASERS:
        _ERASERS[family] = tiny_eraser(family, inverter_steps=2)
    return _ERASERS[family]


def _erase(eraser, case: Case, **run: Any) -> ForgetPatch:
    """A 2-step erase of ``case.people`` seeded people with the case's method -> its patch."""
    g = torch.Generator().manual_seed(11)
    codes = eraser.generator.mapping(torch.randn(case.people, eraser.generator.z_dim, generator=g)).detach()
    settings = {"iterations": 2, **dict(case.settings), "progress": False, **run}
    if case.people > 1:
        requests = {f"person-{i}": codes[i:i + 1] for i in range(case.people)}
        return eraser.erase_many(requests, method=case.method, measure=False, **settings).patch
    return eraser.erase(codes, method=case.method, measure=False, **settings).patch


def _made(case: Case) -> ForgetPatch:
    """The case's patch, made once per test session."""
    if case not in _MADE:
        _MADE[case] = _erase(_eraser(case.family), case)
    return _MADE[case]


def _render(eraser) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    ws = eraser.generator.mapping(torch.randn(3, eraser.generator.z_dim, generator=g)).detach()
    return eraser.synthesize(ws)


def test_the_table_covers_every_shipped_method():
    assert {m for m, _, _ in METHODS} >= set(list_methods()) >= {"lora", "paper", "joint", "robust", "sugar"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_two_step_erase_records_the_method_that_ran(case):
    patch = _made(case)
    assert patch.metadata["method"] == patch.metadata["erase_config"]["method"] == case.method
    assert patch.kind == ("delta" if case.method == "paper" else "lora")
    assert len(patch.metadata["loss_history"]["step"]) == 2 and patch.metadata["loss_history"]["step"][-1] == 1
    assert any(float(t.abs().max()) > 0 for t in patch.tensors.values())  # the 2 steps changed something


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_saved_patch_reloads_as_the_same_patch(case, tmp_path):
    patch = _made(case)
    folder = patch.save_pretrained(tmp_path / "patch")
    back = ForgetPatch.from_pretrained(pretrained_model_name_or_path=folder)
    assert back.patch_id == patch.patch_id and back.kind == patch.kind
    assert back.tensors.keys() == patch.tensors.keys()
    assert all(torch.equal(back.tensors[k], patch.tensors[k]) for k in patch.tensors)
    assert back.metadata["method"] == case.method


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_card_names_the_method_that_ran(case, tmp_path):
    from huggingface_hub import ModelCard

    folder = _made(case).save_pretrained(tmp_path / "patch")
    block = ModelCard.load(folder / "README.md").data.to_dict()["guide_unlearn"]
    assert block["preset"] == case.method
    assert f"`{case.method}`" in (folder / "README.md").read_text()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_applying_then_removing_the_patch_restores_the_generator_bit_for_bit(case):
    eraser, patch = _eraser(case.family), _made(case)
    state = {k: v.clone() for k, v in eraser.generator.state_dict().items()}
    before = _render(eraser)
    eraser.apply_patch(patch)
    try:
        assert (_render(eraser) - before).abs().max() > 0
    finally:
        eraser.remove_patch(patch)
    now = eraser.generator.state_dict()
    assert now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)
    assert torch.equal(_render(eraser), before)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_merging_the_patch_renders_as_applying_it(case):
    patch = _made(case)
    fresh = tiny_eraser(case.family, inverter_steps=2)  # merging changes the weights for good
    base = _render(fresh)
    fresh.apply_patch(patch)
    applied = _render(fresh)
    patching.merge(fresh.generator)
    merged = _render(fresh)
    assert fresh.applied_patches == [] and [m["patch_id"] for m in fresh.merged_patches] == [patch.patch_id]
    assert (applied - base).abs().max() > 1e-4
    assert torch.allclose(merged, applied, atol=1e-5), float((merged - applied).abs().max())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_same_seed_gives_the_same_bytes(case, tmp_path):
    first = _made(case).save_pretrained(tmp_path / "first")
    again = _erase(_eraser(case.family), case).save_pretrained(tmp_path / "again")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_run_resumed_after_an_interrupt_gives_the_same_patch(case, tmp_path):
    eraser = _eraser(case.family)
    with interrupted_at(2), pytest.raises(KeyboardInterrupt):  # dies in step 1, after the checkpoint of step 0
        _erase(eraser, case, state_dir=tmp_path, checkpoint_every=1)
    assert (tmp_path / STATE_FILE).is_file() and eraser.applied_patches == []
    resumed = _erase(eraser, case, state_dir=tmp_path, checkpoint_every=1)
    assert resumed.patch_id == _made(case).patch_id
    assert not (tmp_path / STATE_FILE).exists()


class _FirstTargetsRecognised:
    """An identity judge that recognises the first targets a method chooses (its second call; the first is the
    person's own codes) and nothing else."""

    name = "toy-first-targets"

    def __init__(self):
        from guide_unlearn.pipelines.audit import SamePersonRule

        self.rule = SamePersonRule(self.name, "euclidean", 0.5, "tests")
        self.calls = 0

    def recognise(self, ws, rows):
        from guide_unlearn.protocols import Recognition

        self.calls += 1
        n = ws.shape[0]
        hit = torch.full((n,), self.calls == 2)
        return Recognition(torch.where(hit, 0.1, 0.9).double(), torch.zeros(n, dtype=torch.float64),
                           torch.ones(n, dtype=torch.bool), hit)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_method_moves_a_target_its_identity_judge_recognises(case):
    patch = _erase(_eraser(case.family), case, judge=lambda eraser, inputs, w_u, person_of: _FirstTargetsRecognised())
    record = patch.metadata["target_identity"]
    assert record["judge"] == "toy-first-targets" and record["moved"] == case.people
    assert [c["attempt"] for c in record["codes"]] == [1] * case.people
