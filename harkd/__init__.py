"""harkd: knowledge distillation for wearable human activity recognition."""

__version__ = "0.1.0"
