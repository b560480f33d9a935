"""Model backends (generators, inverters, identity and perceptual networks) behind the core's protocols.

Installed as ``guide_unlearn.adapters``; import it only under that name.
"""

if __name__ != "guide_unlearn.adapters":  # pragma: no cover - guards against a second import name
    raise ImportError("import the backends as `guide_unlearn.adapters`, not as a top-level `adapters` package")
