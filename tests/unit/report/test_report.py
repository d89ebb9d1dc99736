"""`streamguard report` writes one HTML file whose plots render in a real browser."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streamguard.engine import Pipeline
from streamguard.guards import Verdict
from streamguard.policy import Policy
from streamguard.report import report_data
from streamguard.sim import Canary, Items, ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """Verdicts and commands of a replay with a shadow deviation and a contaminated canary."""
    verdicts: list[Verdict] = []
    pipeline = Pipeline(Policy(), 8, on_verdict=verdicts.append)
    gen = TrafficGenerator(
        rate=300,
        seed=1,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=100, shift=0.15),
        canary=Canary(share=0.2, only={"platform": "ios"}),
        outcomes=True,
        items=Items(canary_exponent=2.0, after_s=60, ramp_s=60),
    )
    for events in gen.seconds(240):
        for _, _, value in envelopes(events, 8):
            pipeline.feed(value)
    commands = pipeline.finish()
    folder = tmp_path_factory.mktemp("report")
    (folder / "v.jsonl").write_bytes(b"\n".join(orjson.dumps(v.to_dict()) for v in verdicts))
    (folder / "c.jsonl").write_bytes(b"\n".join(c.to_json() for c in commands))
    return folder / "v.jsonl", folder / "c.jsonl", len(commands)


def test_report_data_has_a_series_per_slice_and_the_commands(
    run_files: tuple[Path, Path, int],
) -> None:
    verdicts = [orjson.loads(line) for line in run_files[0].read_bytes().splitlines()]
    commands = [orjson.loads(line) for line in run_files[1].read_bytes().splitlines()]
    data = report_data("home-ranker", verdicts, commands)
    guards = {g["guard"]: g for g in data["guards"]}
    assert set(guards) >= {"shadow", "canary", "stratification", "popularity"}
    gini = next(c for c in data["concentration"] if c["statistic"] == "gini")
    canary, baseline = ([p[1] for p in s["points"]] for s in gini["series"])
    assert [s["slice"] for s in gini["series"]] == ["canary", "baseline"]
    assert canary[-1] > baseline[-1]  # the canary's exposure sharpened (Zipf 1 -> 2)
    shadow = guards["shadow"]["series"]
    assert shadow[0]["slice"] == "*"
    # The slices that moved most are those of the deviating platform.
    assert all(s["slice"].startswith("platform=android") for s in shadow[1:])
    assert len(shadow) <= 8
    assert len(data["commands"]) == run_files[2] >= 2
    assert {row["slice"] for row in data["mix"]} >= {"platform=ios", "platform=android"}
    assert report_data("other", verdicts, commands)["guards"] == []


def test_the_plots_render_in_headless_chromium(
    run_files: tuple[Path, Path, int], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    verdicts, commands, n_commands = run_files
    args = ["report", "--deployment", "home-ranker", "--verdicts", str(verdicts)]
    written = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamguard",
            *args,
            "--commands",
            str(commands),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert "http" not in re.sub(r"http://www\.w3\.org/[^\"']*", "", out.read_text())  # offline
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip(
            "chromium is not installed and could not be (make test installs Debian's chromium "
            "package where apt is available)"
        )
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    plots = re.findall(r"<svg[^>]*class=\"plot[^\"]*\"", dom)
    # Lines: shadow, canary, stratification, popularity, and the Gini and top-1 % share of
    # both arms; then the mix bars.
    assert len(plots) == 7
    assert 'data-rendered="7"' in dom
    paths = re.findall(r"<path[^>]* d=\"([^\"]+)\"[^>]*class=\"series\"", dom)
    assert len(paths) >= 3
    assert max(d.count("L") for d in paths) >= 10  # a line through many windows
    assert len(re.findall(r'class="command"', dom)) == 6 * n_commands  # on each line plot
    assert len(re.findall(r'data-slice="canary"', dom)) == 2  # the concentration charts
    assert len(re.findall(r'class="bar canary"', dom)) >= 2
