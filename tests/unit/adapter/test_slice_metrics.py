"""Per-slice gauges never exceed their cap, and say what they dropped."""

from prometheus_client import CollectorRegistry

from streamguard.faust_app.slice_metrics import SliceMetrics


def verdict(slices: list[str], psi: float) -> dict:  # type: ignore[type-arg]
    return {
        "deployment": "d",
        "guard": "shadow",
        "slices": [{"slice": s, "n": 10, "stats": {"psi": psi, "other": 1.0}} for s in slices],
    }


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_cap_holds_and_known_series_keep_updating() -> None:
    registry = CollectorRegistry()
    metrics = SliceMetrics(registry, cap=4)
    metrics.observe(verdict(["*", "a=1", "a=2"], psi=0.1))  # 3 slices x (samples + psi) = 6
    series = [
        m
        for family in registry.collect()
        for m in family.samples
        if m.name in {"streamguard_slice_statistic", "streamguard_slice_samples"}
    ]
    assert len(series) == 4
    capped = sample(registry, "streamguard_slice_series_capped_total", guard="shadow")
    assert capped == 2
    metrics.observe(verdict(["*", "a=1"], psi=0.7))  # admitted series are updated, no new drop
    assert (
        sample(
            registry,
            "streamguard_slice_statistic",
            deployment="d",
            guard="shadow",
            slice="*",
            statistic="psi",
        )
        == 0.7
    )
    assert sample(registry, "streamguard_slice_series_capped_total", guard="shadow") == 2
    # "other" is not an exported statistic of the shadow guard
    assert (
        sample(
            registry,
            "streamguard_slice_statistic",
            deployment="d",
            guard="shadow",
            slice="*",
            statistic="other",
        )
        is None
    )
