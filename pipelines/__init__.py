"""User-facing orchestration: the IdentityEraser, the registry of known models and the loaders that read them.

Installed as ``guide_unlearn.pipelines``; import it only under that name.
"""

if __name__ != "guide_unlearn.pipelines":  # pragma: no cover - guards against a second import name
    raise ImportError("import the pipelines as `guide_unlearn.pipelines`, not as a top-level `pipelines` package")
