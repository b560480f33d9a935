"""Training recipes that produce models the library ships (installed as ``guide_unlearn.recipes``)."""
