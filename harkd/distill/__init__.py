"""KD strategies by name (`harkd methods` lists them with their options) and their composition."""

from harkd.distill.base import (Distiller, build_distiller, distiller_defaults, distiller_names, distiller_summary,
                                register_distiller)
from harkd.distill.compose import CompositeKD, build_method

__all__ = ["CompositeKD", "Distiller", "build_distiller", "build_method", "distiller_defaults",
           "distiller_names", "distiller_summary", "register_distiller"]
