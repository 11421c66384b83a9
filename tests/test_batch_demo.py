"""``paywire demo --scheme batch-settlement``: paid requests on one channel settle in four transactions (deposit,
claim, settle, refund); the payer loses exactly what the payee gains, and the escrow ends empty."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from paywire.demo_channels import run_channel_demo

pytestmark = pytest.mark.asyncio


async def test_channel_demo_settles_many_requests_in_four_transactions() -> None:
    out = io.StringIO()
    demo = await run_channel_demo(Console(file=out, width=120), requests=40)
    assert demo.served == 40
    assert [what.split()[0] for what, _ in demo.transactions] == ["deposit", "claim", "settle", "refund"]
    assert demo.charged > 0
    assert demo.deltas == {"payer": -demo.charged, "payee": demo.charged, "escrow": 0}, demo.deltas
    assert "4 transactions" in out.getvalue()
