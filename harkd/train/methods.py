"""KD methods as configs name them: a list of weighted distiller terms, the teacher they distil and optional mixup.
Below the experiment layer, so training sets and personalisation read the same spec the runner does."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, field_validator

from harkd.schema import Str, config_dataclass, validate
from harkd.train.mixup import MixupSpec

TEACHER_KINDS = ("teacher", "self")


def _distiller_term(term: dict) -> dict:
    if "distiller" not in term:  # its other keys are the distiller's options, checked when it is built
        raise ValueError(f"expected a mapping with 'distiller' and its parameters, got {term!r}")
    return term


@config_dataclass("method")
class MethodSpec:
    """A named KD method: a list of weighted distiller terms (empty for the student alone). `teacher: self` distils
    from the student trained alone (a method with no terms listed earlier) instead of the teacher. `mixup` adds mixed
    training windows (harkd.train.mixup): labelled by the teacher for KD, by mixed labels for the student alone."""

    name: Str
    terms: tuple[Annotated[dict[Str, Any], AfterValidator(_distiller_term)], ...]
    teacher: Str = "teacher"
    mixup: MixupSpec | None = None

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, teacher: str, info: ValidationInfo) -> str:
        if teacher not in TEACHER_KINDS:
            raise ValueError(f"method {info.data.get('name')}: unknown teacher {teacher!r}; "
                             f"valid: {', '.join(TEACHER_KINDS)}")
        return teacher

    def __post_init__(self) -> None:
        if self.teacher == "self" and not self.terms:
            raise ValueError(f"method {self.name}: teacher 'self' needs terms (a method without terms is the student "
                             f"alone, which is the self teacher)")

    @classmethod
    def parse(cls, values: Any, where: str) -> "MethodSpec":
        """A registered distiller's name (with its defaults; `none` is the student alone), or {name, terms, ...}."""
        return validate(MethodEntry, values, where)


def method_shorthand(values: Any) -> Any:
    if isinstance(values, str):
        return {"name": values, "terms": [] if values == "none" else [{"distiller": values}]}
    return values


MethodEntry = Annotated[MethodSpec, BeforeValidator(method_shorthand)]

__all__ = ["MethodEntry", "MethodSpec", "TEACHER_KINDS", "method_shorthand"]
