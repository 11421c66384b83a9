"""Output helpers the ``paywire`` commands share."""

from __future__ import annotations

from typing import Any


def info_table(info: dict[str, object], title: str = "paywire devnet") -> Any:
    """A two-column ``rich`` table of ``info`` (nested dicts flattened as ``key.sub``)."""
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", str(vv))
        else:
            t.add_row(k, str(v))
    return t
