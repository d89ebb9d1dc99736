"""The policy: timing, slices and guard thresholds, per deployment.

Every value has a default, so no policy file is needed. A file overrides defaults for all
deployments (``[defaults]``), for one deployment (``[deployments.NAME]``), and guard thresholds
for one slice of a deployment (``[deployments.NAME.slice_overrides."platform=android"]``).
"""

from dataclasses import dataclass, field

__all__ = [
    "SHADOW_STATISTICS",
    "Band",
    "DeploymentPolicy",
    "Policy",
    "ShadowPolicy",
    "SlicePolicy",
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
    decision_threshold: float = 0.5
    score_range: tuple[float, float] = (0.0, 1.0)
    score_bins: int = 100
    psi_groups: int = 10
    dev_alpha: float = 0.02
    dev_min: float = 1e-4
    thresholds: dict[str, Band] = field(default_factory=_default_shadow_thresholds)


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
