"""``joint``: several people in one LoRA patch, and continual erases that keep earlier people erased.

Each person gets their own UFO target (kept apart: :func:`guide_unlearn.targets.separated_targets`); L_local takes
``persons_per_step`` people per iteration in a fixed seeded cyclic order (:class:`PersonSchedule`), the adjacency
samples start from the visited people's codes, L_global is weighted per visited person (:class:`JointBalance`) and
a person may stop training once done (:class:`PersonProgress`). People kept from earlier patches (``keep``) join
the schedule as preservation rows whose target is their own code under G_s. docs/queue.md explains the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch

from ..targets import separated_targets, target_similarity
from .base import LoraSettings, StepRows, finite, need
from .lora import LoraMethod
from .registry import register_method

if TYPE_CHECKING:
    from ..config import EraseConfig


@dataclass(frozen=True)
class JointConfig(LoraSettings):
    """Settings of the ``joint`` method (several people in one LoRA patch; continual erases)."""

    persons_per_step: int = 8
    """How many people's codes enter L_local per iteration. People are visited in a fixed seeded cyclic order, so
    each is visited once every ceil(P / persons_per_step) iterations and the batch stays bounded however many people
    there are (docs/queue.md)."""
    distinct_targets: bool = True
    """Keep the people's UFO targets apart (orthogonalised target directions, ``targets.separated_targets``) so
    that two people are not erased into the same face."""
    joint_balance: float = 0.0
    """In [0, 1]: with n erased people visited in an iteration, L_global is weighted by 1 + joint_balance·(n - 1)
    (:class:`JointBalance`). 1 = the loss is the sum of each visited person's single-erase loss; 0 = one L_global
    against all the visited people's L_local. Measured on demo-faces (docs/queue.md): balance trades erasure for
    preservation, and no setting tried reached 8 of 8 erased with >= 95 % of the others kept within 3x one single
    erase, so the default keeps the erasure (0)."""
    joint_done_ratio: float = 0.0
    """In [0, 1): per-person early stop (:class:`PersonProgress`). A person whose L_local has fallen to this
    fraction of its value at their first visit counts as done: their L_local and the adjacency samples that start
    from them leave the loss until a later visit finds them above it again, and the run stops as soon as every
    erased person is done. 0 = off (every person trains for all iterations)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        need(isinstance(self.persons_per_step, int) and not isinstance(self.persons_per_step, bool)
             and self.persons_per_step >= 1, f"persons_per_step must be an integer >= 1, got {self.persons_per_step!r}")
        need(isinstance(self.distinct_targets, bool), f"distinct_targets must be True or False, got "
                                                      f"{self.distinct_targets!r}")
        need(finite(self.joint_balance) and 0 <= self.joint_balance <= 1,
             f"joint_balance must be a number in [0, 1], got {self.joint_balance!r}")
        need(finite(self.joint_done_ratio) and 0 <= self.joint_done_ratio < 1,
             f"joint_done_ratio must be a number in [0, 1), got {self.joint_done_ratio!r}")


class JointBalance:
    """The loss settings of one iteration of a joint run (``joint_balance`` = b in [0, 1] of ``cfg.method_config``).

    With n > 1 erased people visited in an iteration, L_global is weighted by 1 + b·(n - 1): b = 1 makes the loss
    the SUM over the visited erased people of each one's single-erase loss (their own L_local, the adjacency
    samples that start from their codes, and the shared L_global counted once per person); b = 0 keeps one
    L_global against all the visited people's L_local. People kept from earlier patches do not count; with one
    erased person the config is returned unchanged.

    __call__(visited: the person indices visited in the iteration) -> the EraseConfig for that iteration's loss.
    """

    def __init__(self, cfg: "EraseConfig", erased_people: int):
        self.cfg = cfg
        self.balance = float(getattr(cfg.method_config, "joint_balance", 0.0))
        self.erased_people = erased_people
        self._cache: dict[float, "EraseConfig"] = {}

    def scale(self, visited: Sequence[int]) -> float:
        """The factor on L_global: 1 + b·(n - 1), n = the erased people among ``visited`` (at least 1)."""
        if self.erased_people <= 1 or self.balance == 0:
            return 1.0
        n = max(1, len({int(p) for p in visited if int(p) < self.erased_people}))
        return 1.0 + self.balance * (n - 1)

    def __call__(self, visited: Sequence[int]) -> "EraseConfig":
        scale = self.scale(visited)
        if scale == 1.0:
            return self.cfg
        if scale not in self._cache:
            self._cache[scale] = self.cfg.replace(global_weight=self.cfg.global_weight * scale)
        return self._cache[scale]


class PersonProgress:
    """Per-person early stop of a joint run (``joint_done_ratio`` = f in (0, 1); 0 = off).

    A person's progress is their L_local (mean over their codes, detached) against its value at their first visit:
    a person whose L_local has fallen to f times that start counts as done and drops out of the loss (their L_local
    rows weigh 0 and no adjacency sample starts from them) until a later visit finds them above it again, when they
    rejoin. People kept from earlier patches (index >= ``erased_people``) are preservation rows: never done. When
    every erased person is done at once the run stops (:attr:`finished`). Only visited people are re-judged.

    ``active(person_rows)`` -> bool [k_s] for an iteration's code rows (person index per row);
    ``update(person_rows [k_s], local [k_s], step)`` after the loss.
    """

    def __init__(self, ratio: float, erased_people: int, people: int):
        self.ratio = float(ratio)
        self.erased_people = erased_people
        self.start: list[Optional[float]] = [None] * people  # L_local at the first visit
        self.done = [False] * people
        self.done_step: list[Optional[int]] = [None] * people  # the step a person last became done (None = not)

    def active(self, person_rows: Sequence[int]) -> torch.Tensor:
        """bool [k_s]: which of the iteration's code rows (given as person indices) still train."""
        return torch.tensor([not self.done[int(p)] for p in person_rows], dtype=torch.bool)

    def update(self, person_rows: Sequence[int], local: Sequence[float], step: int) -> None:
        """Judge the visited people from their rows' detached L_local values."""
        values: dict[int, list[float]] = {}
        for p, v in zip(person_rows, local):
            values.setdefault(int(p), []).append(float(v))
        for p, vs in values.items():
            if p >= self.erased_people:
                continue
            value = sum(vs) / len(vs)
            if self.start[p] is None:
                self.start[p] = value
            done = value <= self.ratio * self.start[p]
            if done and not self.done[p]:
                self.done_step[p] = step
            elif not done:
                self.done_step[p] = None
            self.done[p] = done

    @property
    def finished(self) -> bool:
        """Every erased person done."""
        return all(self.done[:self.erased_people])

    def state_dict(self) -> dict[str, list]:
        return {"start": list(self.start), "done": list(self.done), "done_step": list(self.done_step)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        people = len(self.start)
        if not len(state["start"]) == len(state["done"]) == len(state["done_step"]) == people:
            raise ValueError("per-person state of another number of people")
        self.start = [None if v is None else float(v) for v in state["start"]]
        self.done = [bool(v) for v in state["done"]]
        self.done_step = [None if v is None else int(v) for v in state["done_step"]]


class PersonSchedule:
    """Which people enter L_local at each iteration of a joint run: a fixed seeded permutation of the P people,
    read cyclically ``per_step`` at a time (iteration t takes positions t·S .. t·S+S-1 mod P, S = min(per_step,
    P)). No person appears twice in one iteration, every person is visited exactly once every P/S iterations
    (at most ceil(P/S) apart), and the schedule is a pure function of the step, so resuming needs no state.

    person_of: [K] long person index of each code. rows(step) -> the code indices [k_s] of the visited people.
    """

    def __init__(self, person_of: torch.Tensor, per_step: int, seed: int):
        people = int(person_of.max()) + 1
        self.per_step = min(per_step, people)
        g = torch.Generator().manual_seed(seed + 0x5EED)
        self.order = torch.randperm(people, generator=g).tolist()
        self.codes = [torch.nonzero(person_of == p).flatten() for p in range(people)]
        counts = torch.bincount(person_of, minlength=people).to(torch.float32)
        self.weights = 1.0 / counts[person_of]  # [K] local-row weights: each visited person's codes sum to 1

    def people(self, step: int) -> list[int]:
        """The person indices visited at ``step``."""
        n = len(self.order)
        return [self.order[(step * self.per_step + j) % n] for j in range(self.per_step)]

    def rows(self, step: int) -> torch.Tensor:
        """The code indices [k_s] of the people visited at ``step``."""
        return torch.cat([self.codes[p] for p in self.people(step)])

    def person_rows(self, step: int) -> list[int]:
        """The person index of each of :meth:`rows` (host ints, same order: no device sync)."""
        return [p for p in self.people(step) for _ in range(len(self.codes[p]))]


def record_people(per_person: list[dict[str, float]], visited: torch.Tensor,
                  rows: Optional[dict[str, torch.Tensor]], step: int) -> None:
    """Keep, per person, the mean L_local terms over their codes at their latest visit."""
    if rows is None:
        return
    for p in visited.unique().tolist():
        mask = visited == p
        per_person[p] = {name: float(v[mask].mean()) for name, v in rows.items()}
        per_person[p]["step"] = float(step)


class JointMethod(LoraMethod):
    """GUIDE for P people in one LoRA patch (codes [K] with ``person_of``), plus people kept from earlier patches."""

    several_people = True
    keeps_erased = True

    def setup(self) -> None:
        ctx, mc = self.ctx, self.config
        req = ctx.erasure
        self.erased_people, self.erased_codes = req.people, int(req.codes.shape[0])
        self.w_t = self.checked(self.person_targets(req.codes, req.person_of))
        self.w_u, self.person_of, self.people = req.codes, req.person_of, req.people
        if req.keep is not None:  # earlier people: their target is their own code under G_s (already erased there)
            self.w_u, self.w_t = torch.cat([self.w_u, req.keep]), torch.cat([self.w_t, req.keep])
            self.person_of = torch.cat([self.person_of, self.people + torch.arange(req.keep.shape[0],
                                                                                   device=ctx.device)])
            self.people += int(req.keep.shape[0])
        self.schedule = PersonSchedule(self.person_of, mc.persons_per_step, ctx.cfg.seed) if self.people > 1 else None
        self.balanced = JointBalance(ctx.cfg, self.erased_people)
        self.progress = (PersonProgress(mc.joint_done_ratio, self.erased_people, self.people)
                         if self.schedule is not None and self.erased_people > 1 and mc.joint_done_ratio > 0 else None)
        self.per_person: list[dict[str, float]] = [{} for _ in range(self.people)]
        self.stopped_at: Optional[int] = None

    def person_targets(self, codes: torch.Tensor, person_of: torch.Tensor) -> torch.Tensor:
        """UFO targets, kept apart between people when ``distinct_targets`` (``targets.separated_targets``)."""
        ctx = self.ctx
        if int(person_of.max()) > 0 and self.config.distinct_targets:
            return separated_targets(codes, person_of, ctx.generator.w_avg, ctx.cfg.target, ctx.distance)
        return super().person_targets(codes, person_of)

    def targets(self) -> torch.Tensor:
        return self.w_t[:self.erased_codes]

    def rows(self, step: int) -> StepRows:
        if self.schedule is None:
            return super().rows(step)
        ctx, n_adj = self.ctx, self.ctx.cfg.adjacency_samples
        rows = self.schedule.rows(step)
        local_w = self.schedule.weights[rows]
        if self.progress is None:
            idx = torch.randint(0, rows.shape[0], (n_adj,), generator=ctx.rng, device=ctx.device)
            step_cfg = self.balanced(self.schedule.people(step))  # host ints: no device sync
        else:  # done people weigh 0 and start no adjacency sample (PersonProgress)
            idx, step_cfg, local_w = self._active_rows(self.schedule.person_rows(step), local_w, n_adj)
        return StepRows(self.w_u[rows], self.w_t[rows], idx, local_w, step_cfg, info=rows)

    def _active_rows(self, person_rows: list[int], local_w: torch.Tensor, n_adj: int):
        """The iteration's settings with per-person early stop: (idx [n_adj] adjacency start rows, drawn among the
        rows of people not done, the EraseConfig (L_global balanced over the active people; when every visited person
        is done: no adjacency term and L_global weighted as for all visited people, a constant factor that Adam's step
        does not depend on), local row weights [k_s] with done people's rows at 0)."""
        rng, device = self.ctx.rng, self.ctx.device
        active = self.progress.active(person_rows)
        pool = torch.nonzero(active).flatten().to(device)
        live = [p for p, a in zip(person_rows, active.tolist()) if a]
        if len(pool):
            idx = pool[torch.randint(0, len(pool), (n_adj,), generator=rng, device=device)]
            step_cfg = self.balanced(live)
        else:  # same draws as a full step, so the random stream does not depend on who is done
            idx = torch.randint(0, len(person_rows), (n_adj,), generator=rng, device=device)
            step_cfg = self.balanced(person_rows).replace(adjacency_weight=0.0)
        return idx, step_cfg, local_w * active.to(device=device, dtype=local_w.dtype)

    def observe(self, step: int, rows: StepRows, loss: Any) -> bool:
        if self.schedule is None:
            return False
        record_people(self.per_person, self.person_of[rows.info], loss.local_rows, step)
        if self.progress is None:
            return False
        self.progress.update(self.schedule.person_rows(step), loss.local_rows["local"].tolist(), step)
        if self.progress.finished:  # every person erased: this update would only push them further
            self.stopped_at = step
            return True
        return False

    def metadata(self, final: Mapping[str, float]) -> dict[str, Any]:
        ctx, out = self.ctx, {}
        if ctx.erasure.keep is not None:
            out["kept_erased"] = int(ctx.erasure.keep.shape[0])
        if self.people > 1:
            out["num_persons"] = self.erased_people
            out["persons_per_step"] = min(self.config.persons_per_step, self.people)
            if self.erased_people > 1:
                mine = self.person_of < self.erased_people
                out["target_separation"] = target_similarity(self.w_t[mine], self.person_of[mine],
                                                             ctx.generator.w_avg)
        if self.progress is not None:
            out["stopped_at_step"] = self.stopped_at  # None: ran every iteration
        if ctx.erasure.person_ids is not None:
            out["requests"] = self._requests(final)
        return out

    def _requests(self, final: Mapping[str, float]) -> list[dict[str, Any]]:
        """Per request id: its final L_local terms, the step of its last visit and (with early stop) when it was
        done. Numbers only: no code or target."""
        per_person = [{k: v for k, v in final.items() if k not in ("step", "round")}] if self.people == 1 \
            else self.per_person
        last = self.ctx.cfg.iterations - 1
        return [{"request_id": str(rid), "final_losses": {k: v for k, v in losses.items() if k != "step"},
                 "last_step": int(losses.get("step", final.get("step", last))),
                 **({} if self.progress is None else {"done_at_step": self.progress.done_step[p]})}
                for p, (rid, losses) in enumerate(zip(self.ctx.erasure.person_ids, per_person[:self.erased_people]))]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"per_person": [dict(p) for p in self.per_person]}
        if self.progress is not None:
            state["progress"] = self.progress.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        per_person = state.get("per_person")
        if per_person is not None:
            if len(per_person) != self.people:
                raise ValueError("per-person records of another number of people")
            self.per_person = [{str(k): float(v) for k, v in p.items()} for p in per_person]
        if self.progress is not None:
            self.progress.load_state_dict(state["progress"])


register_method("joint", JointMethod, JointConfig)
