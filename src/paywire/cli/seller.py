"""``paywire sales`` and other seller commands (issue: sellers)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
