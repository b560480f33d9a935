"""``guide_unlearn.audit``: measure an erasure with identity figures, attacks and a report.

    report = guide_unlearn.audit(eraser, "patches/person-5", ["aligned_5.jpg"], held_out="photos/person-5/",
                                 others="photos/others/")
    report.metrics["held_out_recognised_after"]      # 0.0: none of the person's other photos comes back
    report.save("audit/person-5")                    # report.json, report.html, the figure PNGs

G_s is the eraser as given (its applied patches included); G_u is G_s with the audited patch on top. Every
figure names the network that made it (``report.networks``); a protocol fixes those networks and is recorded in
the report, never silently substituted. The metrics are explained in docs/audit.md.

The package is a short runner (:func:`audit`) over plug-ins, each one file that registers itself:

- protocols (:func:`register_protocol`): which judge, feature space, views and sample count;
- identity judges (:class:`Judge`, :func:`register_judge`): photos and renderings -> identity vectors, and the
  :class:`SamePersonRule` that says "recognised" (:func:`calibrate_same_person_rule` chooses a cut on real photos
  at a fixed false-accept rate);
- metric families (:class:`MetricFamily`, :func:`register_metric_family`) and attacks (:class:`AuditAttack`,
  :func:`register_attack`): the report's keys, measured from one :class:`AuditContext`; with ``reference=`` a
  comparison model is measured beside the base and the patched model (:class:`AuditedModel`), with ``strangers=``
  a membership score; the attacks ``relearn`` (pivotal tuning) and ``code_book`` run when named;
- verdict rules (:func:`register_verdict`): the report's answer to each auditor's question, with its threshold.

The inversion attackers (:class:`DefaultInverterAttack`, :class:`ScratchProjectorAttack`) are the same objects
the robust erase method attacks its patch with.
"""

from __future__ import annotations

# The shipped plug-ins register themselves on import; the order of the families is the order they run in.
from . import judge_dlib, judge_paper, judge_toy  # noqa: F401
from . import identity, held_out, reinversion, leakage, frechet  # noqa: F401  (isort: skip)
# Families that run when their option is given (reference=, strangers=) and the attacks a caller names.
from . import reference, code_book, relearn, membership  # noqa: F401  (isort: skip)
from .attacks import (DefaultInverterAttack, InversionAttack, ScratchProjectorAttack, fresh_default_inverter,
                      inversion_attack, inverter_record, leakage_probe)
from .calibration import Calibration, calibrate_same_person_rule
from .compared import AuditedModel, audited_models, load_reference
from .families import (METRIC_FAMILIES, METRIC_KEYS, AuditAttack, AuditContext, AuditSettings, MetricFamily,
                       register_attack, register_metric_family, registered_attacks)
from .judges import JUDGES, DetectingJudge, Judge, Match, make_judge, register_judge
from .photos import Photo, PhotoSet, PhotoSpec, load_photos, photo_items, prepare_photos, sample_people
from .protocols import PROTOCOLS, Protocol, get_protocol, register_protocol
from .report import AuditReport, jsonable, record_audit
from .rule import SamePersonRule
from .relearn import DEFAULT_RELEARN_STEPS, MAX_RELEARN_STEPS, pivotal_tuning
from .runner import ATTACKS, DEFAULT_MAX_OTHERS, audit
from .verdicts import QUESTIONS, VERDICT_RULES, Verdict, register_verdict, verdicts

__all__ = [
    "ATTACKS", "DEFAULT_MAX_OTHERS", "DEFAULT_RELEARN_STEPS", "JUDGES", "MAX_RELEARN_STEPS", "METRIC_FAMILIES",
    "METRIC_KEYS", "PROTOCOLS", "QUESTIONS", "VERDICT_RULES", "AuditAttack", "AuditContext", "AuditReport",
    "AuditSettings", "AuditedModel", "Calibration", "DefaultInverterAttack", "DetectingJudge", "InversionAttack",
    "Judge", "Match", "MetricFamily", "Photo", "PhotoSet", "PhotoSpec", "Protocol", "SamePersonRule",
    "ScratchProjectorAttack", "Verdict", "audit", "audited_models", "calibrate_same_person_rule",
    "fresh_default_inverter", "get_protocol", "inversion_attack", "inverter_record", "jsonable", "leakage_probe",
    "load_photos", "load_reference", "make_judge", "photo_items", "pivotal_tuning", "prepare_photos", "record_audit",
    "register_attack", "register_judge", "register_metric_family", "register_protocol", "register_verdict",
    "registered_attacks", "sample_people", "verdicts",
]
