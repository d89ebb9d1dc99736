"""The policy: timing, slices and guard thresholds, per deployment.

Every value has a default, so no policy file is needed. A file overrides defaults for all
deployments (``[defaults]``), for one deployment (``[deployments.NAME]``), and guard thresholds
for one slice of a deployment (``[deployments.NAME.slice_overrides."platform=android"]``).
"""

from dataclasses import dataclass, field

__all__ = [
    "CANARY_METRICS",
    "SHADOW_STATISTICS",
    "Band",
    "CanaryPolicy",
    "ColdStartPolicy",
    "DeploymentPolicy",
    "DeterminismPolicy",
    "LeakagePolicy",
    "MetricTest",
    "Policy",
    "PopularityPolicy",
    "ShadowPolicy",
    "SlicePolicy",
    "StratificationPolicy",
]

#: Statistics of the shadow-deviation guard, in the order evidence lists them.
SHADOW_STATISTICS = ("mean_abs_dev", "p95_abs_dev", "flip_rate", "psi", "js_distance")


@dataclass(frozen=True, slots=True)
class Band:
    """Thresholds of one statistic: at ``pause`` a human must approve, at ``rollback`` revert."""

    pause: float
    rollback: float


def _default_shadow_thresholds() -> dict[str, Band]:
    # PSI 0.1 / 0.25 is the common "moderate / major shift" reading; 0.1 on the base-2 JS
    # distance is Evidently's default. The deviation and flip-rate bands are product choices
    # for scores in [0, 1]; see the README's guard table.
    return {
        "mean_abs_dev": Band(0.05, 0.15),
        "p95_abs_dev": Band(0.15, 0.40),
        "flip_rate": Band(0.05, 0.15),
        "psi": Band(0.10, 0.25),
        "js_distance": Band(0.10, 0.20),
    }


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    """Shadow-deviation guard settings."""

    enabled: bool = True
    min_pairs: int = 500
    #: Also judge the last ``recent_windows`` windows alone (0: off), with the same thresholds
    #: and ``min_pairs``: a sudden shift is diluted in a 5-minute horizon by the windows before
    #: it. The horizon still catches slow, small shifts. See the guard's module docstring.
    recent_windows: int = 3
    decision_threshold: float = 0.5
    score_range: tuple[float, float] = (0.0, 1.0)
    score_bins: int = 100
    psi_groups: int = 10
    dev_alpha: float = 0.02
    dev_min: float = 1e-4
    thresholds: dict[str, Band] = field(default_factory=_default_shadow_thresholds)
    #: Shadow health: a slice whose primaries found a usable (not errored) shadow partner
    #: within the pairing TTL less often than this is *untrusted*: its deviation statistics
    #: compare only the requests the shadow managed to answer. A product choice: at 0.9 a
    #: tenth of the slice is missing from the comparison.
    pairing_floor: float = 0.9
    #: Primaries a slice needs over the horizon before its pairing rate is judged.
    health_min_primaries: int = 500


#: Metrics the canary guard compares, in the order evidence lists them.
CANARY_METRICS = ("outcome_rate", "error_rate", "log_latency")


@dataclass(frozen=True, slots=True)
class MetricTest:
    """How one canary metric is tested.

    ``min_effect`` is the smallest difference worth catching; it sets the mSPRT mixing scale
    τ and, times ``CanaryPolicy.practical_fraction``, a floor under which a significant
    difference is not acted on. With ``relative`` it is a fraction of the baseline mean.
    """

    min_effect: float
    relative: bool
    worse: str  # "lower" or "higher": which direction is a regression


def _default_metrics() -> dict[str, MetricTest]:
    return {
        # 10 % fewer clicks/conversions than the baseline.
        "outcome_rate": MetricTest(0.10, relative=True, worse="lower"),
        # Half a percentage point more failed requests.
        "error_rate": MetricTest(0.005, relative=False, worse="higher"),
        # Mean log latency 10 % higher: ln(1.1).
        "log_latency": MetricTest(0.0953, relative=False, worse="higher"),
    }


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """Canary vs baseline, per slice, with always-valid sequential tests."""

    enabled: bool = True
    #: Chance of a false rollback for a healthy canary over its whole run: half goes to the
    #: whole deployment (Bonferroni over its metrics), half to the slices (Benjamini-Hochberg).
    alpha: float = 0.01
    min_samples: int = 200  # per arm and slice before a metric is judged
    practical_fraction: float = 0.5
    outcome_join_s: float = 120.0
    max_exposures: int = 200_000  # open exposures per source partition and deployment
    latency_alpha: float = 0.05  # relative accuracy of the latency sketch (p99 in evidence)
    metrics: dict[str, MetricTest] = field(default_factory=_default_metrics)
    #: The change look: the same comparisons on data since one of the last ``change_windows``
    #: windows only (0 turns it off). It may only pause; the cumulative test rolls back.
    change_windows: int = 6
    #: Expected false pauses from the change look per deployment and day of canary traffic:
    #: a rate, not a lifetime probability (:mod:`streamguard.stats.change`).
    change_alarms_per_day: float = 0.05


@dataclass(frozen=True, slots=True)
class StratificationPolicy:
    """Is the canary's traffic mix the baseline's? (sample-ratio mismatch by slice)."""

    enabled: bool = True
    alpha: float = 0.001  # the level SRM checks use on platforms (GrowthBook, Kameleoon)
    concentration: float = 10_000.0  # Dirichlet prior concentration (Lindon & Malek default)
    tv_floor: float = 0.10  # skews smaller than this total variation distance are harmless
    min_canary_events: int = 500
    uncovered_share: float = 0.10  # a slice is uncovered below this fraction of its share
    # ... judged only where the canary should have seen at least this many events: with 1,000
    # slices and a young canary, most slices expect < 1 event and 0 is no evidence (Poisson:
    # P(X < 0.1 e) at e = 10 is 5e-5).
    uncovered_min_expected: float = 10.0
    max_uncovered_weight: float = 0.20  # more uncovered population than this is contamination


@dataclass(frozen=True, slots=True)
class PopularityPolicy:
    """Popularity-feedback amplification: does the canary concentrate exposure faster?

    Judged canary against baseline (primary) on the item exposures (``items`` of prediction
    events) of the last ``trend_windows`` windows: for the whole deployment, and for every
    slice of 1 to ``slice_level`` dimensions that has ``min_exposures`` in both arms.

    Memory per arm, version and window: ``sketch_capacity`` (whole deployment) or
    ``slice_sketch_capacity`` (slice) SpaceSaving counters plus ``2^hll_precision`` bytes,
    kept for ``trend_windows + 1`` windows, for at most ``max_slices`` slices per deployment,
    whatever the catalogue size or the number of windows seen.
    """

    enabled: bool = True
    #: Stage 1 keeps this many items (largest counts of the flush) per partial.
    flush_top_k: int = 512
    #: Counters of the per-window SpaceSaving summary in stage 2.
    sketch_capacity: int = 2048
    #: HyperLogLog precision of the per-window distinct-item estimate (2^p one-byte registers).
    hll_precision: int = 12
    #: Items in the catalogue, for coverage; 0 = unknown: coverage is then relative to the
    #: distinct items either arm exposed over the horizon.
    catalogue_size: int = 0
    top_fraction: float = 0.01  # the "top 1 %" of items for top_share
    trend_windows: int = 12  # windows in the Gini trend (slope per window)
    min_windows: int = 8  # windows with enough exposures in both arms before judging
    min_exposures: int = 2000  # item exposures per arm and window for the window to count
    gini_slope_margin: float = 0.005  # canary slope minus baseline slope, Gini per window
    z: float = 3.0  # ... and at least this many standard errors of that difference
    elasticity_margin: float = 0.15  # canary elasticity above 1 + margin, baseline's not
    head_items: int = 100  # items in the elasticity fit (largest in the earlier window)
    gainers: int = 10  # items gaining most share listed in the evidence
    #: Slices of 1 to this many dimensions are judged too (0 = the whole deployment only).
    slice_level: int = 1
    slice_flush_top_k: int = 128  # stage 1's per-partial cut for one slice
    slice_sketch_capacity: int = 256  # SpaceSaving counters per slice, arm and window
    #: Slices with item exposures kept per deployment; exposures of further slices are
    #: counted in the evidence (``untracked_slices``) but not judged.
    max_slices: int = 32


@dataclass(frozen=True, slots=True)
class CompatPolicy:
    """Rollback compatibility: has a rollback target ever served the live request schema?

    A model version *accepts* a request schema (``feature_schema`` of prediction events) once
    it served at least ``min_events`` predictions of it with an error rate of at most
    ``max_error_rate``, or when the policy declares it (versions that served before streamguard
    watched them). A model that cannot read a schema fails on nearly every request of it; the
    5 % default leaves room for ordinary failures (timeouts, bad inputs) of a healthy one.
    """

    enabled: bool = True
    min_events: int = 100
    max_error_rate: float = 0.05
    max_versions: int = 64  # versions remembered per deployment (least recently seen go)
    max_schemas: int = 32  # schemas remembered per version
    #: model version -> schemas it is known to accept.
    declared: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ColdStartPolicy:
    """Cold start: do young or not-ready serving replicas slow requests down?

    Per deployment and served model version, over the horizon, the latency of requests served
    by *young* replicas (``replica_age_s < young_age_s``) is compared with that of *warm* ones.
    Young replicas are significantly slower when a one-sided test (the smaller of a Welch test
    on mean log latency and a two-proportion test on the share of requests above the warm p99,
    Bonferroni-corrected) is below ``alpha``, *and* the young p99 is at least ``min_p99_ratio``
    times the warm p99, with at least ``min_young`` and ``min_warm`` timed requests. The effect
    floor, not the p-value, is what keeps healthy traffic quiet under repeated looks.
    """

    enabled: bool = True
    young_age_s: float = 120.0  # replicas younger than this are "young" (the incident: 45 s load)
    alpha: float = 0.001  # per look; the effect floor and confirm_windows add to it
    min_p99_ratio: float = 2.0  # young p99 / warm p99 (the incident: 800 / 50 ms)
    min_young: int = 200  # timed requests of young replicas over the horizon
    min_warm: int = 1000  # timed requests of warm replicas over the horizon
    #: Requests served while not ready in the window that just closed for a replica to be
    #: drained (with ``confirm_windows`` this means two consecutive windows).
    min_not_ready: int = 1
    max_replicas: int = 128  # replicas tracked per version and window; the rest are "overflow"
    latency_alpha: float = 0.05  # relative accuracy of the latency sketch (DDSketch)
    listed_replicas: int = 10  # replicas named in the evidence, slowest first


@dataclass(frozen=True, slots=True)
class DeterminismPolicy:
    """Non-determinism: do one model version's outputs depend on the execution environment?

    Predictions carry an ``env_fingerprint`` (hardware, driver, numeric libraries). Per model
    version, over the horizon:

    - **paired** (the same requests): a shadow running the primary's model version in another
      environment scores the same request; ``d`` is the per-request difference. A fingerprint
      pair is flagged when the mean ``|d|`` exceeds ``tolerance`` (one-sided z on its lower
      confidence bound) or the share of requests with ``|d| > tolerance`` exceeds
      ``max_share`` (exact binomial test), from ``min_pairs`` pairs;
    - **unpaired** (the same slices): the post-stratified mean score difference between two
      fingerprints, over the slice combinations both served, is flagged when it lies outside
      ``[-tolerance, tolerance]`` significantly (a z test of that interval null), from
      ``min_events`` events of each fingerprint in strata with ``min_stratum_events`` each.

    All tests of one version form one family, held at ``alpha`` with Holm's step-down. The
    tolerance is the minimum effect: large traffic makes harmless numeric noise (1e-6) highly
    significant, never larger than the tolerance.
    """

    enabled: bool = True
    #: Scores (of the same request, or mean scores of the same slices) within this of each
    #: other count as equal. 1e-3 is far above float32 round-off between GPUs or BLAS builds
    #: (about 1e-6 on scores in [0, 1]) and far below a change anyone would act on.
    tolerance: float = 1e-3
    max_share: float = 0.01  # paired: share of requests differing beyond the tolerance
    alpha: float = 0.001  # per look, for all of a version's tests together (Holm)
    min_pairs: int = 200  # paired: pairs of a fingerprint pair over the horizon
    min_events: int = 500  # unpaired: events of each fingerprint in the strata compared
    min_stratum_events: int = 10  # unpaired: events of each fingerprint for a stratum to count
    max_fingerprints: int = 16  # per version; events of further fingerprints count as overflow
    listed_comparisons: int = 10  # fingerprint pairs listed in the evidence, strongest first


@dataclass(frozen=True, slots=True)
class LeakagePolicy:
    """Feature backfill leakage: block a training pipeline whose features look ahead.

    A feature whose timestamp exceeds its example's label timestamp by more than
    ``tolerance_s`` was computed with data from after the label (engagement backfilled through
    Jan 20 for Jan 15 events). The one-hour default is the tolerance of the fix reported for
    that incident (0.92 AUC offline, 0.80 in production). A pipeline is looked up by its name
    like a deployment (``[deployments.NAME.guards.leakage]``).
    """

    enabled: bool = True
    tolerance_s: float = 3600.0
    #: Example ids listed in the block's evidence (the first violating ones, in log order).
    max_example_ids: int = 20
    #: Offending features listed in the evidence (most violations first); all are counted.
    max_features_listed: int = 50


@dataclass(frozen=True, slots=True)
class SlicePolicy:
    """Which slices are tracked.

    All subsets of ``dimensions`` with up to ``max_level`` members are tracked, plus the full
    combination when ``include_full``; the empty subset is the whole deployment.
    """

    dimensions: tuple[str, ...] = ("platform", "region", "tier")
    max_level: int = 2
    include_full: bool = True
    max_values_per_dimension: int = 32
    max_slices: int = 2000


@dataclass(frozen=True, slots=True)
class DeploymentPolicy:
    """Everything the engine needs to know about one deployment."""

    window_s: int = 10
    horizon_windows: int = 30
    allowed_lateness_s: float = 5.0
    pair_ttl_s: float = 30.0
    max_pending: int = 100_000
    #: A finding becomes a command once the same slice explained a breach at this many
    #: consecutive window closes (1 = at once); filters slices that cross a threshold by noise
    #: a window before the slice that really deviates.
    confirm_windows: int = 2
    slices: SlicePolicy = field(default_factory=SlicePolicy)
    shadow: ShadowPolicy = field(default_factory=ShadowPolicy)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    stratification: StratificationPolicy = field(default_factory=StratificationPolicy)
    popularity: PopularityPolicy = field(default_factory=PopularityPolicy)
    compat: CompatPolicy = field(default_factory=CompatPolicy)
    cold_start: ColdStartPolicy = field(default_factory=ColdStartPolicy)
    determinism: DeterminismPolicy = field(default_factory=DeterminismPolicy)
    leakage: LeakagePolicy = field(default_factory=LeakagePolicy)
    #: slice label -> statistic -> band, for the shadow guard.
    shadow_slice_thresholds: dict[str, dict[str, Band]] = field(default_factory=dict)

    @property
    def horizon_s(self) -> int:
        """Length of the judged horizon in seconds."""
        return self.window_s * self.horizon_windows

    def shadow_band(self, label: str, statistic: str) -> Band:
        """Threshold band of a statistic for one slice (its override, else the default)."""
        override = self.shadow_slice_thresholds.get(label, {})
        return override.get(statistic, self.shadow.thresholds[statistic])


@dataclass(frozen=True, slots=True)
class Policy:
    """Policies of all deployments; unknown deployments get ``defaults``."""

    defaults: DeploymentPolicy = field(default_factory=DeploymentPolicy)
    deployments: dict[str, DeploymentPolicy] = field(default_factory=dict)

    def for_deployment(self, name: str) -> DeploymentPolicy:
        """The policy that applies to ``name``."""
        return self.deployments.get(name, self.defaults)
