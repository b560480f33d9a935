"""Erase methods: plug-ins of the one training loop (:func:`guide_unlearn.engine.run_erase`), registered by name.

Shipped: ``lora`` (GUIDE with a LoRA forget patch, one person; the default), ``paper`` (the official GUIDE recipe: a
full fine-tune of the synthesis), ``joint`` (several people in one patch, and continual erases that keep earlier
people erased), ``robust`` (attack-and-erase rounds against re-inversion) and ``sugar`` (``joint`` with learned
distinct surrogate targets and Fisher-weighted preservation). ``list_methods()`` names them.

How to add a method — one file that registers itself:

1. Write its settings as a frozen dataclass subclassing :class:`MethodConfig` (or :class:`LoraSettings` when it
   trains a LoRA patch), one docstring line per field, validated in ``__post_init__``.
2. Subclass :class:`EraseMethod` (or a shipped method: ``LoraMethod`` for one person, ``JointMethod`` to get
   several people and ``keep_erased`` for free) and override only what differs: ``person_targets`` (where each
   person's codes are sent), ``setup`` (anything else before training), ``start`` (sees the trained parameters
   once they exist: for a penalty on them), ``rows`` (the codes and targets of each step), ``extra_loss`` (extra
   terms), ``phases`` / ``begin_phase``, ``metadata`` (counts only) and ``state_dict`` / ``load_state_dict``
   (what a resume needs). Declare what it supports with the class attributes ``several_people``,
   ``keeps_erased``, ``trains`` and, when it needs something only the pipelines can build (the robust method's
   attackers), ``services``: the class of that interface, which the pipelines build (``SERVICE_BUILDERS`` in
   ``pipelines/requests.py``). The core never imports the pipelines.
3. End the file with ``register_method("name", NameMethod, NameConfig)`` and import it below (a method outside the
   library registers itself when its module is imported). It is then reachable as ``method="name"`` in
   ``EraseConfig.preset``, ``eraser.default_config``, ``eraser.erase``, ``eraser.erase_many`` (when it erases several
   people) and ``--method name`` on the command line, and it joins the contract table of
   ``tests/core/test_method_contract.py`` by adding one row.
"""

from __future__ import annotations

from .base import Erasure, EraseMethod, LoraSettings, LossTerm, MethodConfig, RunContext, StepRows
from .registry import RegisteredMethod, check_supported, get_method, list_methods, register_method

# The shipped methods register themselves on import, in this order.
from . import lora  # noqa: E402,F401,I001
from . import paper  # noqa: E402,F401
from . import joint  # noqa: E402,F401
from . import robust  # noqa: E402,F401
from . import sugar  # noqa: E402,F401

__all__ = ["EraseMethod", "Erasure", "LoraSettings", "LossTerm", "MethodConfig", "RegisteredMethod", "RunContext",
           "StepRows", "check_supported", "get_method", "list_methods", "register_method"]
