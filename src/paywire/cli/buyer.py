"""``paywire pay`` and ``paywire wallet`` (issue: buyers)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
