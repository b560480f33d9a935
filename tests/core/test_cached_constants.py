"""guide_unlearn.frozen: constants of frozen weights computed once per erase, never stale after it."""

import torch
from torch import nn

from guide_unlearn.frozen import derived, cached_constants


def _counting(calls):
    def fn(t):
        calls.append(1)
        return t * 2
    return fn


def test_a_frozen_parameter_is_derived_once_inside_the_scope():
    p = nn.Parameter(torch.ones(3), requires_grad=False)
    calls = []
    with cached_constants():
        a = derived(p, "x2", _counting(calls))
        b = derived(p, "x2", _counting(calls))
    assert len(calls) == 1 and a is b and torch.equal(a, torch.full((3,), 2.0))


def test_outside_the_scope_every_call_computes_afresh():
    p = nn.Parameter(torch.ones(3), requires_grad=False)
    calls = []
    derived(p, "x2", _counting(calls))
    derived(p, "x2", _counting(calls))
    assert len(calls) == 2


def test_trainable_parameters_and_plain_tensors_are_never_cached():
    p = nn.Parameter(torch.ones(3))  # requires grad: it changes every step
    t = torch.ones(3)
    calls = []
    with cached_constants():
        for x in (p, p, t, t):
            derived(x, "x2", _counting(calls))
    assert len(calls) == 4


def test_a_weight_written_in_place_between_scopes_is_seen_by_the_next_scope():
    # a LoRA merge writes base.data in place without bumping the version counter: a new scope must not reuse
    p = nn.Parameter(torch.ones(3), requires_grad=False)
    with cached_constants():
        first = derived(p, "x2", lambda w: w * 2)
    p.data += 1.0
    with cached_constants():
        second = derived(p, "x2", lambda w: w * 2)
    assert torch.equal(first, torch.full((3,), 2.0)) and torch.equal(second, torch.full((3,), 4.0))


def test_different_names_of_one_weight_are_kept_apart():
    p = nn.Parameter(torch.arange(3.0), requires_grad=False)
    with cached_constants():
        a = derived(p, "x2", lambda w: w * 2)
        b = derived(p, "sq", lambda w: w.square())
    assert torch.equal(a, torch.tensor([0.0, 2.0, 4.0])) and torch.equal(b, torch.tensor([0.0, 1.0, 4.0]))


def test_the_erase_loop_renders_the_same_with_and_without_cached_constants():
    from guide_unlearn import frozen
    from guide_unlearn.protocols import module_of
    from guide_unlearn.testing import tiny_eraser

    eraser = tiny_eraser()
    g = eraser.generator
    module_of(g).requires_grad_(False)  # as during an erase: only the LoRA would train
    ws = g.mapping(torch.randn(3, g.z_dim, generator=torch.Generator().manual_seed(0))).detach()
    with torch.no_grad():
        plain = g.synthesis(ws, None, noise_mode="const").images
        with cached_constants():
            cached = [g.synthesis(ws, None, noise_mode="const").images for _ in range(2)]
            entries = len(frozen._CACHE.get())
    assert entries > 0  # the backend did use the cache
    assert all(torch.allclose(plain, c, atol=1e-6) for c in cached)
