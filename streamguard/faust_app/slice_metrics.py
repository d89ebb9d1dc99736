"""Per-slice guard statistics as Prometheus gauges, with a hard cap on label sets.

Slices multiply (platform x region x tier x ...), and every label set is a time series held
by Prometheus forever, so at most ``cap`` (deployment, guard, slice, statistic) series are
exported per worker: the first ones seen. Values of series beyond the cap are dropped and
counted in ``streamguard_slice_series_capped_total``; the full per-slice picture is in the
verdicts topic, the status API and the report.
"""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["EXPORTED", "SliceMetrics"]

#: Statistics exported per guard (the ones the guards decide on).
EXPORTED = {
    "shadow": ("psi", "mean_abs_dev", "flip_rate"),
    "canary": ("outcome_rate.delta", "error_rate.delta", "log_latency.delta"),
    "stratification": ("residual",),
}


class SliceMetrics:
    """Gauges set from verdicts; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, cap: int = 500) -> None:
        self.cap = cap
        self.value = Gauge(
            "streamguard_slice_statistic",
            "A guard's statistic for one slice at its last window close.",
            ["deployment", "guard", "slice", "statistic"],
            registry=registry,
        )
        self.samples = Gauge(
            "streamguard_slice_samples",
            "Samples behind a slice's statistics at its last window close.",
            ["deployment", "guard", "slice"],
            registry=registry,
        )
        self.capped = Counter(
            "streamguard_slice_series_capped",
            "Per-slice values not exported because the series cap was reached.",
            ["guard"],
            registry=registry,
        )
        self._series: set[tuple[str, ...]] = set()

    def _admit(self, labels: tuple[str, ...]) -> bool:
        if labels in self._series:
            return True
        if len(self._series) >= self.cap:
            return False
        self._series.add(labels)
        return True

    def observe(self, verdict: dict[str, Any]) -> None:
        """Export the statistics of a verdict's slices (within the cap)."""
        deployment, guard = str(verdict.get("deployment")), str(verdict.get("guard"))
        wanted = EXPORTED.get(guard, ())
        for entry in verdict.get("slices", []):
            name = str(entry.get("slice"))
            stats = entry.get("stats") or {}
            if self._admit((deployment, guard, name)):
                self.samples.labels(deployment, guard, name).set(float(entry.get("n") or 0))
            else:
                self.capped.labels(guard).inc()
            for statistic in wanted:
                value = stats.get(statistic)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                labels = (deployment, guard, name, statistic)
                if self._admit(labels):
                    self.value.labels(*labels).set(float(value))
                else:
                    self.capped.labels(guard).inc()
