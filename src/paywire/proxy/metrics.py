"""The proxy's counters, rendered in the Prometheus text format at ``/metrics``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Metrics"]


@dataclass(slots=True)
class Metrics:
    """Counters since start (they survive reloads)."""

    responses: Counter[str] = field(default_factory=Counter)  # by status class: "2xx", "4xx" …
    paid: int = 0
    upstream_requests: int = 0
    upstream_errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    inflight: int = 0
    reloads: Counter[str] = field(default_factory=Counter)  # "ok" / "failed"
    generation: int = 0

    def render(self) -> str:
        lines = [
            "# HELP paywire_proxy_responses_total Responses sent, by status class.",
            "# TYPE paywire_proxy_responses_total counter",
            *(f'paywire_proxy_responses_total{{code="{k}"}} {v}' for k, v in sorted(self.responses.items())),
            "# HELP paywire_proxy_paid_requests_total Requests forwarded with a verified payment.",
            "# TYPE paywire_proxy_paid_requests_total counter",
            f"paywire_proxy_paid_requests_total {self.paid}",
            "# TYPE paywire_proxy_upstream_requests_total counter",
            f"paywire_proxy_upstream_requests_total {self.upstream_requests}",
            "# TYPE paywire_proxy_upstream_errors_total counter",
            f"paywire_proxy_upstream_errors_total {self.upstream_errors}",
            "# TYPE paywire_proxy_request_bytes_total counter",
            f"paywire_proxy_request_bytes_total {self.bytes_up}",
            "# TYPE paywire_proxy_response_bytes_total counter",
            f"paywire_proxy_response_bytes_total {self.bytes_down}",
            "# TYPE paywire_proxy_inflight_requests gauge",
            f"paywire_proxy_inflight_requests {self.inflight}",
            "# TYPE paywire_proxy_reloads_total counter",
            *(f'paywire_proxy_reloads_total{{result="{k}"}} {v}' for k, v in sorted(self.reloads.items())),
            "# TYPE paywire_proxy_config_generation gauge",
            f"paywire_proxy_config_generation {self.generation}",
        ]
        return "\n".join(lines) + "\n"
