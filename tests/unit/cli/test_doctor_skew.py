"""`streamguard doctor`'s clock-skew line, which the embedded broker cannot exercise."""

import pytest

from streamguard.cli.cmd_doctor import broker_skew, skew_verdict


@pytest.mark.parametrize(
    ("skew", "level"),
    [
        (0.0, "ok"),
        (30.0, "ok"),  # exactly the tolerance is tolerated
        (-30.0, "ok"),
        (30.01, "fail"),
        (-30.01, "fail"),  # a broker behind this host counts the same
        (3600.0, "fail"),
    ],
)
def test_the_level_turns_to_fail_just_past_the_tolerance_either_way(
    skew: float, level: str
) -> None:
    assert skew_verdict(skew, 30.0)[0] == level


def test_the_text_is_what_the_cli_always_printed() -> None:
    assert skew_verdict(-1.234, 30.0) == (
        "ok",
        "clock skew with the broker -1.23 s (tolerated 30 s)",
    )
    assert skew_verdict(45.0, 30.0) == (
        "fail",
        "clock skew with the broker +45.00 s (tolerated 30 s)",
    )


def test_an_unknown_skew_warns_without_failing() -> None:
    level, text = skew_verdict(None, 30.0)
    assert level == "warn"
    assert text.startswith("clock skew unknown: the broker does not stamp append times")


def test_the_skew_is_measured_from_the_middle_of_the_round_trip() -> None:
    # Sent at 100 s, acknowledged at 100.4 s, appended at broker time 105.2 s.
    assert broker_skew(100.0, 100.4, 105_200) == pytest.approx(5.0)
    assert broker_skew(100.0, 100.4, 99_200) == pytest.approx(-1.0)
