"""Policy files: every mistake is a one-line ConfigError naming the key; overrides land right."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.exceptions import ConfigError
from streamguard.policy import (
    Band,
    DeploymentPolicy,
    Policy,
    load_policy,
    parse_label,
    parse_policy,
)
from streamguard.policy.model import SHADOW_STATISTICS


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_policy(text)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("colour = 1", "policy.colour"),
        ("[defaults]\ncolour = 1", "defaults.colour"),
        ("[deployments.a]\ncolour = 1", "deployments.a.colour"),
        ("[defaults.slices]\ncolour = 1", "defaults.slices.colour"),
        ("[deployments.a.slices]\ncolour = 1", "deployments.a.slices.colour"),
        ("[defaults.guards]\nbogus = {}", "defaults.guards.bogus"),
        ("[deployments.a.guards.shadow]\ncolour = 1", "deployments.a.guards.shadow.colour"),
        (
            "[defaults.guards.shadow.thresholds]\nauc = { pause = 1, rollback = 2 }",
            "defaults.guards.shadow.thresholds.auc",
        ),
        (
            "[deployments.a.slice_overrides.'platform=ios']\ncanary = {}",
            "deployments.a.slice_overrides.'platform=ios'.canary",
        ),
        (
            "[deployments.a.slice_overrides.'platform=ios'.shadow]\nauc = {pause=1, rollback=2}",
            "deployments.a.slice_overrides.'platform=ios'.shadow.auc",
        ),
        (
            "[defaults.guards.shadow.thresholds]\npsi = { pause = 0.1, rollback = 0.2, warn = 0 }",
            "defaults.guards.shadow.thresholds.psi",
        ),
    ],
)
def test_unknown_keys_are_named(text: str, named: str) -> None:
    assert named in config_error(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("defaults = 5", "defaults"),
        ("deployments = 'a'", "deployments"),
        ("[deployments]\na = 3", "deployments.a"),
        ("[defaults]\nwindow_s = 2.5", "defaults.window_s"),
        ("[defaults]\nwindow_s = true", "defaults.window_s"),
        ("[defaults]\nwindow_s = '10'", "defaults.window_s"),
        ("[defaults]\nwindow_s = 0", "defaults.window_s"),
        ("[defaults]\nhorizon_s = -300", "defaults.horizon_s"),
        ("[defaults]\nallowed_lateness_s = 'soon'", "defaults.allowed_lateness_s"),
        ("[defaults]\npair_ttl_s = [1]", "defaults.pair_ttl_s"),
        ("[defaults]\nmax_pending = 1.5", "defaults.max_pending"),
        ("[defaults]\nguards = 5", "defaults.guards"),
        ("[defaults]\nslices = 'platform'", "defaults.slices"),
        ("[defaults]\nslice_overrides = 5", "defaults.slice_overrides"),
        ("[defaults.guards]\nshadow = true", "defaults.guards.shadow"),
        ("[defaults.guards.shadow]\nenabled = 1", "defaults.guards.shadow.enabled"),
        ("[defaults.guards.shadow]\nmin_pairs = 10.0", "defaults.guards.shadow.min_pairs"),
        ("[defaults.guards.shadow]\nmin_pairs = false", "defaults.guards.shadow.min_pairs"),
        ("[defaults.guards.shadow]\nscore_bins = 0", "defaults.guards.shadow.score_bins"),
        ("[defaults.guards.shadow]\nscore_range = [0, 'a']", "defaults.guards.shadow.score_range"),
        ("[defaults.guards.shadow]\nscore_range = [1, 0]", "defaults.guards.shadow.score_range"),
        ("[defaults.guards.shadow]\nscore_range = 1", "defaults.guards.shadow.score_range"),
        ("[defaults.guards.shadow]\ndev_alpha = 0.7", "defaults.guards.shadow.dev_alpha"),
        ("[defaults.guards.shadow]\ndecision_threshold = 'x'", "decision_threshold"),
        ("[defaults.guards.shadow]\npsi_groups = 200", "defaults.guards.shadow.psi_groups"),
        ("[defaults.guards.shadow]\nthresholds = 5", "defaults.guards.shadow.thresholds"),
        ("[defaults.guards.shadow.thresholds]\npsi = 5", "defaults.guards.shadow.thresholds.psi"),
        (
            "[defaults.guards.shadow.thresholds]\npsi = { pause = 0.1 }",
            "defaults.guards.shadow.thresholds.psi",
        ),
        (
            "[defaults.guards.shadow.thresholds]\npsi = { pause = true, rollback = 1 }",
            "defaults.guards.shadow.thresholds.psi.pause",
        ),
        (
            "[defaults.guards.shadow.thresholds]\npsi = { pause = 0.1, rollback = '1' }",
            "defaults.guards.shadow.thresholds.psi.rollback",
        ),
        ("[defaults.guards.canary]\nchange_windows = -1", "defaults.guards.canary.change_windows"),
        ("[defaults.guards.canary]\nchange_windows = 361", "defaults.guards.canary.change_windows"),
        ("[defaults.guards.canary]\nchange_windows = 6.0", "defaults.guards.canary.change_windows"),
        (
            "[defaults.guards.canary]\nchange_alarms_per_day = 0",
            "defaults.guards.canary.change_alarms_per_day",
        ),
        (
            "[defaults.guards.canary]\nchange_alarms_per_day = nan",
            "defaults.guards.canary.change_alarms_per_day",
        ),
        (
            "[defaults.guards.canary]\nchange_alarms_per_day = inf",
            "defaults.guards.canary.change_alarms_per_day",
        ),
        (
            "[defaults.guards.canary]\nchange_alarms_per_day = 1e9",
            "defaults.guards.canary.change_alarms_per_day",
        ),
        (
            "[defaults.guards.canary]\nchange_alarms_per_day = 'few'",
            "defaults.guards.canary.change_alarms_per_day",
        ),
        ("[defaults.slices]\ndimensions = 'platform'", "defaults.slices.dimensions"),
        ("[defaults.slices]\ndimensions = ['a', 1]", "defaults.slices.dimensions"),
        ("[defaults.slices]\ndimensions = ['a', '']", "defaults.slices.dimensions"),
        ("[defaults.slices]\ninclude_full = 'yes'", "defaults.slices.include_full"),
        ("[defaults.slices]\nmax_level = 1.0", "defaults.slices.max_level"),
        ("[defaults.slices]\nmax_level = -1", "defaults.slices.max_level"),
        ("[defaults.slices]\nmax_slices = 0", "defaults.slices.max_slices"),
        ("[defaults.slices]\nmax_values_per_dimension = -3", "max_values_per_dimension"),
        ("[deployments.a]\nslice_overrides = []", "deployments.a.slice_overrides"),
        (
            "[deployments.a.slice_overrides]\n'platform=ios' = 5",
            "deployments.a.slice_overrides.'platform=ios'",
        ),
        (
            "[deployments.a.slice_overrides.'platform=ios']\nshadow = 5",
            "deployments.a.slice_overrides.'platform=ios'.shadow",
        ),
    ],
)
def test_wrong_types_and_values_are_named(text: str, named: str) -> None:
    assert named in config_error(text)


@pytest.mark.parametrize("where", ["defaults", "deployments.a", "deployments.a.slice_overrides"])
def test_pause_above_rollback(where: str) -> None:
    if where.endswith("slice_overrides"):
        text = f"[{where}.'tier=free'.shadow]\nflip_rate = {{ pause = 0.3, rollback = 0.2 }}"
    else:
        text = f"[{where}.guards.shadow.thresholds]\nflip_rate = {{ pause = 0.3, rollback = 0.2 }}"
    message = config_error(text)
    assert "flip_rate" in message
    assert where in message


def test_negative_pause_is_refused() -> None:
    text = "[defaults.guards.shadow.thresholds]\npsi = { pause = -0.1, rollback = 0.2 }"
    assert "defaults.guards.shadow.thresholds.psi" in config_error(text)


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ("[defaults]\nhorizon_s = 25", "defaults"),
        ("[defaults]\nwindow_s = 7", "defaults"),  # the default horizon, 300 s, is not 7k
        ("[deployments.a]\nwindow_s = 10\nhorizon_s = 105", "deployments.a"),
        ("[defaults]\nwindow_s = 5\n[deployments.a]\nhorizon_s = 12", "deployments.a"),
    ],
)
def test_horizon_must_be_a_multiple_of_the_window(settings: str, where: str) -> None:
    message = config_error(settings)
    assert "horizon_s" in message
    assert where in message


@pytest.mark.parametrize(
    "label", ["platform", "=ios", "platform=", "platform=ios,", "a=b,,c=d", " = "]
)
def test_bad_slice_labels(label: str) -> None:
    message = config_error(f"[deployments.a.slice_overrides.'{label}'.shadow]\n")
    assert repr(label) in message


@pytest.mark.parametrize("count", [7, 8])
def test_too_many_dimensions(count: int) -> None:
    dims = ", ".join(f"'d{i}'" for i in range(count))
    assert "deployments.a.slices.dimensions" in config_error(
        f"[deployments.a.slices]\ndimensions = [{dims}]"
    )


def test_duplicate_dimensions() -> None:
    assert "defaults.slices.dimensions" in config_error(
        "[defaults.slices]\ndimensions = ['a', 'b', 'a']"
    )


@pytest.mark.parametrize("name", ["device type", "a,b", "a=b", "x" * 65, "région"])
def test_a_dimension_no_prediction_can_carry_is_refused(name: str) -> None:
    # Labels are "key=value,..." text: such a key would never match, or garble the labels.
    message = config_error(f"[defaults.slices]\ndimensions = ['platform', {name!r}]")
    assert message.startswith("defaults.slices.dimensions:")
    assert "is not a slice key a prediction can carry" in message


def test_six_dimensions_are_fine() -> None:
    dims = [f"d{i}" for i in range(6)]
    policy = parse_policy(f"[defaults.slices]\ndimensions = {dims!r}")
    assert policy.defaults.slices.dimensions == tuple(dims)


def test_toml_syntax_error_is_one_line() -> None:
    message = config_error("[defaults\nwindow_s = ")
    assert message.startswith("policy:")


def test_empty_policy_is_the_defaults() -> None:
    assert parse_policy("") == Policy()
    assert load_policy(None) == Policy()


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[defaults]\nwindow_s = 5\n")
    assert load_policy(path).defaults.window_s == 5
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "missing.toml")
    assert "missing.toml" in str(info.value)


# --- overrides ----------------------------------------------------------------------------------


def test_defaults_apply_to_every_deployment() -> None:
    policy = parse_policy(
        """
        [defaults]
        window_s = 5
        allowed_lateness_s = 2.5
        [defaults.guards.shadow]
        min_pairs = 50
        [defaults.guards.shadow.thresholds]
        psi = { pause = 0.2, rollback = 0.3 }
        [deployments.a]
        pair_ttl_s = 12
        """
    )
    for name in ("a", "unknown"):
        deployment = policy.for_deployment(name)
        assert deployment.window_s == 5
        assert deployment.horizon_s == DeploymentPolicy().horizon_s  # 300 s, in 5 s windows
        assert deployment.horizon_windows == 60
        assert deployment.allowed_lateness_s == 2.5
        assert deployment.shadow.min_pairs == 50
        assert deployment.shadow.thresholds["psi"] == Band(0.2, 0.3)
        # Statistics not mentioned keep the built-in bands.
        default_bands = DeploymentPolicy().shadow.thresholds
        assert deployment.shadow.thresholds["flip_rate"] == default_bands["flip_rate"]
    assert policy.for_deployment("a").pair_ttl_s == 12.0
    assert policy.for_deployment("unknown").pair_ttl_s == DeploymentPolicy().pair_ttl_s


def test_deployment_overrides_only_itself() -> None:
    policy = parse_policy(
        """
        [defaults.guards.shadow.thresholds]
        psi = { pause = 0.2, rollback = 0.3 }
        [deployments.a]
        window_s = 20
        horizon_s = 600
        [deployments.a.slices]
        dimensions = ["tier", "platform"]
        max_level = 1
        [deployments.a.guards.shadow.thresholds]
        mean_abs_dev = { pause = 0.01, rollback = 0.02 }
        """
    )
    a, b = policy.for_deployment("a"), policy.for_deployment("b")
    assert (a.window_s, a.horizon_windows) == (20, 30)
    assert a.slices.dimensions == ("tier", "platform")
    assert a.slices.max_level == 1
    assert a.slices.include_full == DeploymentPolicy().slices.include_full
    assert a.shadow.thresholds["mean_abs_dev"] == Band(0.01, 0.02)
    assert a.shadow.thresholds["psi"] == Band(0.2, 0.3)  # inherited from defaults
    assert b == policy.defaults
    assert (
        b.shadow.thresholds["mean_abs_dev"] == DeploymentPolicy().shadow.thresholds["mean_abs_dev"]
    )


@given(st.permutations(["platform=android", "tier=free", "region=eu"]), st.integers(1, 3))
def test_slice_override_label_in_any_dimension_order(parts: list[str], size: int) -> None:
    written = ",".join(parts[:size])
    canonical = ",".join(sorted(parts[:size]))
    policy = parse_policy(
        f"""
        [deployments.a.slice_overrides."{written}".shadow]
        flip_rate = {{ pause = 0.01, rollback = 0.02 }}
        """
    )
    a = policy.for_deployment("a")
    assert a.shadow_band(canonical, "flip_rate") == Band(0.01, 0.02)
    # Other statistics of that slice, other slices and other deployments keep the defaults.
    defaults = DeploymentPolicy().shadow.thresholds
    assert a.shadow_band(canonical, "psi") == defaults["psi"]
    assert a.shadow_band("*", "flip_rate") == defaults["flip_rate"]
    assert a.shadow_band("platform=ios", "flip_rate") == defaults["flip_rate"]
    assert policy.for_deployment("b").shadow_band(canonical, "flip_rate") == defaults["flip_rate"]


def test_slice_overrides_merge_across_levels() -> None:
    policy = parse_policy(
        """
        [defaults.slice_overrides."tier=free,platform=ios".shadow]
        psi = { pause = 0.5, rollback = 0.6 }
        [deployments.a.slice_overrides."platform=ios,tier=free".shadow]
        flip_rate = { pause = 0.01, rollback = 0.02 }
        [deployments.b.slice_overrides."platform = ios , tier = free".shadow]
        psi = { pause = 0.7, rollback = 0.8 }
        """
    )
    label = "platform=ios,tier=free"
    a, b, c = (policy.for_deployment(n) for n in "abc")
    assert a.shadow_band(label, "psi") == Band(0.5, 0.6)  # from defaults
    assert a.shadow_band(label, "flip_rate") == Band(0.01, 0.02)  # its own
    assert b.shadow_band(label, "psi") == Band(0.7, 0.8)  # its own wins over the default's
    assert c.shadow_band(label, "psi") == Band(0.5, 0.6)
    assert c.shadow_band(label, "flip_rate") == DeploymentPolicy().shadow.thresholds["flip_rate"]


def test_every_statistic_can_be_overridden() -> None:
    lines = "\n".join(
        f"{name} = {{ pause = 0.{i + 1}, rollback = 0.9 }}"
        for i, name in enumerate(SHADOW_STATISTICS)
    )
    policy = parse_policy(f"[defaults.guards.shadow.thresholds]\n{lines}")
    for i, name in enumerate(SHADOW_STATISTICS):
        assert policy.defaults.shadow.thresholds[name] == Band((i + 1) / 10, 0.9)


@given(
    st.dictionaries(
        st.sampled_from(["platform", "tier", "region", "os"]),
        st.text("abcxyz019-_", min_size=1, max_size=5),
        max_size=4,
    )
)
def test_parse_label_round_trips(dims: dict[str, str]) -> None:
    label = ",".join(f"{k}={v}" for k, v in dims.items()) or "*"
    assert parse_label(label) == dims


def test_parse_label_whole_deployment() -> None:
    assert parse_label("*") == {}
    assert parse_label("") == {}


def test_default_bands_cover_every_statistic() -> None:
    bands = DeploymentPolicy().shadow.thresholds
    assert set(bands) == set(SHADOW_STATISTICS)
    assert all(0 <= band.pause <= band.rollback for band in bands.values())


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[defaults.guards.leakage]\ncolour = 1", "defaults.guards.leakage.colour"),
        ("[defaults.guards.leakage]\ntolerance_s = -1", "defaults.guards.leakage.tolerance_s"),
        ("[defaults.guards.leakage]\ntolerance_s = '1h'", "defaults.guards.leakage.tolerance_s"),
        ("[defaults.guards.leakage]\nmax_example_ids = 2.5", "leakage.max_example_ids"),
        ("[defaults.guards.leakage]\nenabled = 1", "defaults.guards.leakage.enabled"),
        ("[defaults.guards.shadow]\npairing_floor = 1.5", "defaults.guards.shadow.pairing_floor"),
        ("[defaults.guards.shadow]\nhealth_min_primaries = 0", "shadow.health_min_primaries"),
        ("[defaults.guards.shadow]\nrecent_windows = -1", "shadow.recent_windows"),
        ("[defaults.guards.shadow]\nrecent_windows = 1.5", "shadow.recent_windows"),
    ],
)
def test_leakage_and_shadow_health_values_are_checked(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_policy(text)


def test_leakage_and_shadow_health_settings_apply_per_deployment() -> None:
    policy = parse_policy(
        "[defaults.guards.leakage]\ntolerance_s = 0\n"
        "[deployments.trainer.guards.leakage]\ntolerance_s = 7200\nmax_example_ids = 5\n"
        "[deployments.ranker.guards.shadow]\npairing_floor = 0.5\n"
    )
    assert policy.for_deployment("other").leakage.tolerance_s == 0.0
    assert policy.for_deployment("trainer").leakage.tolerance_s == 7200.0
    assert policy.for_deployment("trainer").leakage.max_example_ids == 5
    assert policy.for_deployment("ranker").shadow.pairing_floor == 0.5
    assert policy.for_deployment("other").shadow.pairing_floor == 0.9


def test_the_shadow_recent_look_can_be_set_or_turned_off() -> None:
    policy = parse_policy(
        "[defaults.guards.shadow]\nrecent_windows = 0\n"
        "[deployments.ranker.guards.shadow]\nrecent_windows = 6\n"
    )
    assert policy.for_deployment("other").shadow.recent_windows == 0
    assert policy.for_deployment("ranker").shadow.recent_windows == 6
    assert parse_policy("").for_deployment("x").shadow.recent_windows == 3


def test_the_change_look_can_be_tuned_or_turned_off() -> None:
    policy = parse_policy(
        "[defaults.guards.canary]\nchange_windows = 12\nchange_alarms_per_day = 0.5\n"
        "[deployments.quiet.guards.canary]\nchange_windows = 0\n"
    )
    assert policy.for_deployment("a").canary.change_windows == 12
    assert policy.for_deployment("a").canary.change_alarms_per_day == 0.5
    assert policy.for_deployment("quiet").canary.change_windows == 0


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("canary", "alpha", 0.02),
        ("canary", "practical_fraction", 0.25),
        ("stratification", "tv_floor", 0.2),
        ("popularity", "top_fraction", 0.05),
        ("compat", "max_error_rate", 0.1),
        ("cold_start", "alpha", 0.02),
        ("determinism", "max_share", 0.3),
    ],
)
def test_a_fraction_is_read_into_its_guard_policy(section: str, key: str, value: float) -> None:
    policy = parse_policy(f"[deployments.d.guards.{section}]\n{key} = {value}")
    assert getattr(getattr(policy.for_deployment("d"), section), key) == value
    assert getattr(getattr(policy.defaults, section), key) != value  # it changed something
