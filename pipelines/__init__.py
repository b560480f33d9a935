"""User-facing orchestration (the IdentityEraser and the registry of known models).

Installed as ``guide_unlearn.pipelines``; import it only under that name.
"""

if __name__ != "guide_unlearn.pipelines":  # pragma: no cover - guards against a second import name
    raise ImportError("import the pipelines as `guide_unlearn.pipelines`, not as a top-level `pipelines` package")
