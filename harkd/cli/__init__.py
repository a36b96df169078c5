"""The `harkd` command line. User errors print one line and exit 2; everything else is a bug and keeps its trace.

One module per group of commands (data, run, deploy, search), each registering on the app in cli/app.py."""

from __future__ import annotations

import signal
import sys

import typer

# Importing each module registers its commands, in the order the help lists them.
from harkd.cli import run, search, deploy, data  # noqa: F401, I001
from harkd.cli.app import app
from harkd.errors import HarkdError


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary folders go, finished units stay


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)  # `kill`, a scheduler's time limit
    try:
        app()
    except HarkdError as exc:
        typer.echo(f"harkd: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("harkd: interrupted", err=True)
        sys.exit(130)
