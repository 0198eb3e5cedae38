"""Local model files: installing, locating and verifying the embedded generation model."""

from featdisco.models.install import (
    LOCAL_MODEL,
    ModelSpec,
    ensure_model,
    install_local_model,
    model_path,
    models_dir,
    verify_model,
)

__all__ = [
    "LOCAL_MODEL",
    "ModelSpec",
    "ensure_model",
    "install_local_model",
    "model_path",
    "models_dir",
    "verify_model",
]
