"""KD strategies by name (`harkd methods` lists them with their family and options) and their composition."""

from harkd.distill.base import (FAMILIES, Distiller, build_distiller, distiller_defaults, distiller_family,
                                distiller_names, distiller_summary, register_distiller)
from harkd.distill.compose import CompositeKD, build_method

__all__ = ["FAMILIES", "CompositeKD", "Distiller", "build_distiller", "build_method", "distiller_defaults",
           "distiller_family", "distiller_names", "distiller_summary", "register_distiller"]
