"""Decoding one kubelet /metrics/resource payload (asv-style)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from fastmetrics.decode import DecoderC, DecoderPy

from ._data import NOW_MS, PODS_PER_NODE, node_payloads

DEFAULT_TS_NS = NOW_MS * 1_000_000


class TimeDecode:
    """One node payload (pods x 2 containers) decoded into columns, by implementation."""

    params = [PODS_PER_NODE]
    param_names = ["pods_per_node"]

    def setup(self, pods: int) -> None:
        self.payloads = node_payloads(pods)
        self.body = self.payloads[1]
        self.i = 0
        if DecoderC is not None:
            self.decoder_c = DecoderC()
            for body in self.payloads:
                self.decoder_c.decode(body, DEFAULT_TS_NS)
        self.decoder_py = DecoderPy()
        for body in self.payloads:
            self.decoder_py.decode(body, DEFAULT_TS_NS)

    def _next(self) -> bytes:
        # alternate between two scrapes of the node: unchanged labels, changed values
        self.i ^= 1
        return self.payloads[self.i]

    def time_decode_c(self, pods: int) -> None:
        """Compiled decoder, reused across scrapes of the node (the server's steady state)."""
        self.decoder_c.decode(self._next(), DEFAULT_TS_NS)

    def time_decode_c_cold(self, pods: int) -> None:
        """Compiled decoder, fresh for every payload (a node's first scrape)."""
        DecoderC().decode(self.body, DEFAULT_TS_NS)

    def time_decode_py(self, pods: int) -> None:
        """Pure-Python twin, reused across scrapes."""
        self.decoder_py.decode(self._next(), DEFAULT_TS_NS)

    def time_prometheus_client(self, pods: int) -> None:
        """prometheus_client's text parser over the same bytes, every sample materialised."""
        for family in text_string_to_metric_families(self._next().decode("utf-8")):
            for _sample in family.samples:
                pass
