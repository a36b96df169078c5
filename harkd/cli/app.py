"""The `harkd` application and what its commands share: the sub-application `data`, the teacher store option."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from harkd.experiment.teacher_cache import TeacherStore

app = typer.Typer(help="Knowledge distillation for wearable human activity recognition.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Install and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data", rich_help_panel="Data")

NO_TEACHER_CACHE = typer.Option(False, "--no-teacher-cache", help="train every teacher, neither reading nor "
                                "writing the store of trained teachers ($HARKD_TEACHERS, else the user cache folder)")


def _teachers(no_cache: bool) -> TeacherStore | None:
    """The store of trained teachers, unless the user opts out."""
    from harkd.experiment.teacher_cache import TeacherStore, teacher_root

    return None if no_cache else TeacherStore(teacher_root())
