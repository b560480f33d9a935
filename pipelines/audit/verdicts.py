"""The report's verdicts: the auditor's four questions, each answered by figures with a threshold and pass / fail.

1. Is the person's own code erased?         ``id`` below the judge's same-person cosine.
2. Are their other photos erased?           ``held_out_recognised_after``.
3. Do the attacks bring them back?          every attack's recognised rate through G_u; the membership scores.
4. Are the others kept?                     ``others_kept``, ``id_others``, the Fréchet distance.

Recognised rates pass at most :data:`TOLERANCE` above the reference's (the same attack through a model that
never learnt the person) when a reference was given, else at most :data:`ABSOLUTE_RECOGNISED`; a membership score
passes within two bootstrap standard deviations of the reference's (of 0 without a reference). The thresholds are
choices, stated in every verdict; docs/audit.md explains them. A rule is a function ``report -> [Verdict]``; more
are added with :func:`register_verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .registry import Registry

TOLERANCE = 0.10  # a recognised rate through G_u may exceed the reference's by this much
ABSOLUTE_RECOGNISED = 0.10  # without a reference: the largest recognised rate that passes
OTHERS_KEPT_MIN = 0.90  # without a reference: the smallest others_kept that passes
MEMBERSHIP_SPREAD = 2.0  # a membership score passes within this many bootstrap standard deviations

QUESTIONS = {
    "own_code": "Is the person's own code erased?",
    "other_photos": "Are their other photos erased?",
    "attacks": "Do the attacks bring them back?",
    "others": "Are the others kept?",
}


@dataclass
class Verdict:
    """One figure's answer to one question.

    question:  a key of :data:`QUESTIONS`.
    figure:    the metric key.
    label:     what the figure is, in words.
    value:     its value (NaN: not measured).
    threshold: the rule, in words with numbers ("<= reference 0.20 + 0.10 = 0.30").
    passed:    True / False, or None (not measured, or no threshold applies).
    note:      why it was not measured, or what to read beside it.
    """

    question: str
    figure: str
    label: str
    value: float
    threshold: str
    passed: Optional[bool]
    note: str = ""


Rule = Callable[[Any], list]  # report -> [Verdict]
VERDICT_RULES: Registry[Rule] = Registry("verdict rule")


def register_verdict(name: str, rule: Rule, replace: bool = False) -> Rule:
    """Add a rule ``report -> [Verdict]`` to every report's verdicts. -> rule."""
    return VERDICT_RULES.register(name, rule, replace=replace)


def verdicts(report) -> list[Verdict]:
    """Every registered rule's verdicts for ``report``, in the order of :data:`QUESTIONS` (then of the rules)."""
    found = [v for rule in VERDICT_RULES.values() for v in rule(report)]
    order = list(QUESTIONS)
    return sorted(found, key=lambda v: order.index(v.question) if v.question in order else len(order))


def _value(report, key: str) -> float:
    v = report.metrics.get(key)
    return float("nan") if v is None else float(v)


def _unmeasured(report, question: str, key: str, label: str) -> Optional[Verdict]:
    """A "not measured" verdict when ``key`` is in the report without a value; None when it has one."""
    v = _value(report, key)
    if math.isfinite(v):
        return None
    return Verdict(question, key, label, v, "", None, report.details.get("not_run", {}).get(key, "not measured"))


def recognised_verdict(report, question: str, key: str, reference_key: Optional[str], label: str) -> list:
    """A recognised rate through G_u: at most the reference's + TOLERANCE, or ABSOLUTE_RECOGNISED without one."""
    if key not in report.metrics:
        return []
    missing = _unmeasured(report, question, key, label)
    if missing:
        return [missing]
    v, ref = _value(report, key), _value(report, reference_key) if reference_key else float("nan")
    if math.isfinite(ref):
        cut, rule = ref + TOLERANCE, f"<= reference {ref:.2f} + {TOLERANCE:.2f} = {ref + TOLERANCE:.2f}"
    else:
        cut, rule = ABSOLUTE_RECOGNISED, f"<= {ABSOLUTE_RECOGNISED:.2f} (no reference)"
    return [Verdict(question, key, label, v, rule, v <= cut + 1e-9, stand_in_note(report) if math.isfinite(ref)
                    else "")]


def stand_in_note(report) -> str:
    """A warning for a verdict against a reference that renders as the base itself, else ""."""
    if (report.details.get("reference") or {}).get("stand_in"):
        return "the reference has the base's weights: a stand-in, not a model that never learnt the person"
    return ""


def _own_code(report) -> list:
    cut = report.thresholds.get("same_person_cosine")
    label = "identity cosine of G_s(w_u) and G_u(w_u), the request's own code (the paper's ID)"
    missing = _unmeasured(report, "own_code", "id", label)
    if missing or cut is None:
        return [missing] if missing else []
    v = _value(report, "id")
    return [Verdict("own_code", "id", label, v, f"< {cut:.3f} (the judge's same-person cosine)", v < cut)]


def _other_photos(report) -> list:
    return recognised_verdict(report, "other_photos", "held_out_recognised_after", "reference_held_out_recognised",
                              "held-out photos recognised through G_u")


ATTACK_FIGURES = (
    ("reinversion_default_recognised_after", "reference_reinversion_default_recognised",
     "re-inversion by the fresh default inverter"),
    ("reinversion_default_without_entry_recognised_after", "reference_reinversion_default_without_entry_recognised",
     "re-inversion by the default inverter without the person's code-book entries"),
    ("reinversion_scratch_recognised_after", "reference_reinversion_scratch_recognised",
     "re-inversion by the from-scratch projector"),
    ("relearn_recognised_after", "reference_relearn_recognised", "re-learning: pivotal tuning on one photo"),
)


def _attacks(report) -> list:
    out = [v for key, ref, label in ATTACK_FIGURES for v in recognised_verdict(report, "attacks", key, ref, label)]
    if "leakage_recognised" in report.metrics:
        label = "patch-leakage probe renderings recognised (base model + patch, no photo)"
        v = _value(report, "leakage_recognised")
        out.append(_unmeasured(report, "attacks", "leakage_recognised", label)
                   or Verdict("attacks", "leakage_recognised", label, v, "= 0", v == 0))
    for tag in ("default", "scratch"):
        out += _membership(report, tag)
    return out


def _membership(report, tag: str) -> list:
    key = f"membership_{tag}_after"
    if key not in report.metrics:
        return []
    label = f"membership score through G_u ({tag} attacker; person minus strangers)"
    missing = _unmeasured(report, "attacks", key, label)
    if missing:
        return [missing]
    res = (report.details.get("membership") or {}).get(tag, {})
    v, ref = _value(report, key), _value(report, f"reference_membership_{tag}")
    if math.isfinite(ref):
        spread = MEMBERSHIP_SPREAD * float(res.get("reference", {}).get("std") or 0.0)
        rule = f"<= reference {ref:+.3f} + {MEMBERSHIP_SPREAD:g} bootstrap sd = {ref + spread:+.3f}"
    else:
        ref, spread = 0.0, MEMBERSHIP_SPREAD * float(res.get("after", {}).get("std") or 0.0)
        rule = f"<= 0 + {MEMBERSHIP_SPREAD:g} bootstrap sd = {spread:+.3f} (no reference)"
    return [Verdict("attacks", key, label, v, rule, v <= ref + spread + 1e-9)]


def _others(report) -> list:
    out = []
    if "others_kept" in report.metrics:
        label = "others recognised through G_s still recognised when re-inverted through G_u"
        missing = _unmeasured(report, "others", "others_kept", label)
        v, ref = _value(report, "others_kept"), _value(report, "reference_others_kept")
        if missing:
            out.append(missing)
        elif math.isfinite(ref):
            out.append(Verdict("others", "others_kept", label, v, f">= reference {ref:.2f} - {TOLERANCE:.2f} = "
                                                                  f"{ref - TOLERANCE:.2f}", v >= ref - TOLERANCE - 1e-9,
                               stand_in_note(report)))
        else:
            out.append(Verdict("others", "others_kept", label, v, f">= {OTHERS_KEPT_MIN:.2f} (no reference)",
                               v >= OTHERS_KEPT_MIN))
    cut = report.thresholds.get("same_person_cosine")
    label = "identity cosine of G_s(w) and G_u(w) for the other people's codes (the paper's ID_others)"
    missing = _unmeasured(report, "others", "id_others", label)
    if missing or cut is not None:
        v = _value(report, "id_others")
        out.append(missing or Verdict("others", "id_others", label, v, f">= {cut:.3f} (the judge's same-person "
                                                                       "cosine)", v >= cut))
    for key in ("fd_pre", "fid_pre"):
        v, ref = _value(report, key), _value(report, f"reference_{key}")
        if math.isfinite(v):
            label = f"Fréchet distance of G_u's samples from G_s's ({report.protocol.get('feature_space')})"
            out.append(Verdict("others", key, label, v, f"<= {ref:.4g}, the reference's distance from G_s", v <= ref,
                               stand_in_note(report)) if math.isfinite(ref) else
                       Verdict("others", key, label, v, "none without a reference (compare at the same sample "
                                                        "count)", None))
    return out


for _name, _rule in (("own_code", _own_code), ("other_photos", _other_photos), ("attacks", _attacks),
                     ("others", _others)):
    register_verdict(_name, _rule)
