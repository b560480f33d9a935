"""The names and limits of a forget patch folder, format version 1 (docs/patch_format.md). A leaf module (it
imports nothing of this package): :mod:`guide_unlearn.patch` reads and writes the folder, :mod:`guide_unlearn.hub`
fetches exactly these files and checks their sizes before downloading."""

from __future__ import annotations

__all__ = ["DELTA_FILE", "FORMAT", "FORMAT_VERSION", "LORA_CONFIG_FILE", "LORA_FILE", "MAX_JSON_BYTES", "META_FILE"]

FORMAT = "guide_unlearn.forget_patch"
FORMAT_VERSION = 1
META_FILE = "forget_patch.json"  # the metadata (JSON object)
LORA_CONFIG_FILE = "adapter_config.json"  # peft LoraConfig (kind "lora")
LORA_FILE = "adapter_model.safetensors"  # peft LoRA tensors (kind "lora")
DELTA_FILE = "delta_model.safetensors"  # weight differences (kind "delta")
MAX_JSON_BYTES = 1 << 20  # each JSON file of a patch
