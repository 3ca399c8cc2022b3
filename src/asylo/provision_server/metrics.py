"""Prometheus metrics of a provision server, served over HTTP for the operator's scraper.

Each server has a registry of its own (not prometheus_client's global one), so that several servers in one process
— tests do that — count separately.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

#: Why a provision or upload was refused; the `reason` label of `asylo_provision_rejects_total`. The limits each
#: have their own (see asylo.provision_server.limits): server_limit and client_limit (enclaves), image_too_large,
#: pending_uploads (uploads in progress on the server), client_uploads (by one client), store_quota (bytes of
#: uploaded images), image_count (uploaded images), disk_full, upload_timeout (an upload too slow or stalled).
REJECT_REASONS = ("unauthenticated", "permission_denied", "not_found", "invalid_argument", "server_limit",
                  "client_limit", "image_too_large", "pending_uploads", "client_uploads", "store_quota",
                  "image_count", "disk_full", "upload_timeout", "data_loss", "already_exists")


class ProvisionMetrics:
    """The counters and gauges, and the HTTP endpoint that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_enclaves = Gauge("asylo_provision_active_enclaves", "Enclaves provisioned and not yet released",
                                     registry=self.registry)
        self.warm_proxies = Gauge("asylo_provision_warm_proxies", "Pre-started proxies ready for a provision",
                                  registry=self.registry)
        self.provisions = Counter("asylo_provision_provisions", "Enclaves provisioned", registry=self.registry)
        self.failures = Counter("asylo_provision_failures", "Provisions that failed after being accepted (a proxy "
                                "that did not start, an image it refused)", registry=self.registry)
        self.rejects = Counter("asylo_provision_rejects", "Requests refused, by reason", ["reason"],
                               registry=self.registry)
        self.uploads = Counter("asylo_provision_uploads", "Images accepted into the store", registry=self.registry)
        for reason in REJECT_REASONS:
            self.rejects.labels(reason)  # every reason shows up, at 0, from the start
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def reject(self, reason: str) -> None:
        self.rejects.labels(reason).inc()

    def serve(self, address: str) -> int:
        """Serve /metrics over plain HTTP on `address` (host:port; port 0 picks one); return the port.

        Metrics say how busy a server is and nothing secret, but they are still only served where the operator
        says: loopback, or a named interface (a wildcard needs saying so: "0.0.0.0:9464").
        """
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        thread.name = "asylo-provision-metrics"
        self._http, self._thread = server, thread
        return int(server.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

