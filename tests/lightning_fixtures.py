"""A real LNbits (FakeWallet funding source) for Lightning tests: started per test module, or a skip."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paywire.lightning.lnbits_dev import LnbitsDev, LnbitsUnavailable

VENV = Path(__file__).resolve().parents[1] / ".paywire" / "lnbits-venv"


@contextlib.asynccontextmanager
async def lnbits_node(payer_sats: int = 100_000) -> AsyncIterator[LnbitsDev]:
    """LNbits on a free port with a funded payer wallet and an empty payee wallet; skips if it cannot run."""
    ln = LnbitsDev(venv=VENV, payer_sats=payer_sats)
    try:
        await ln.start()
    except LnbitsUnavailable as exc:
        await ln.stop()
        pytest.skip(f"LNbits cannot run here: {exc}")
    try:
        yield ln
    finally:
        await ln.stop()
