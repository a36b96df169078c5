"""Models by name: the TSAK teacher and semantic classifier, and the compact students."""

from harkd.models.base import (HarModel, ModelOutput, build_model, model_defaults, model_names,
                               register_model)

__all__ = ["HarModel", "ModelOutput", "build_model", "model_defaults", "model_names", "register_model"]
