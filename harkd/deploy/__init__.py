"""After training: trained models as self-describing files (bundle) and as ONNX for devices (onnx_export)."""

from harkd.models.bundle import ModelBundle, load_bundle

__all__ = ["ModelBundle", "load_bundle"]
