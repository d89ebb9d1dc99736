"""The pure packages never pull in Faust or a Kafka client, and each imports on its own."""

import subprocess
import sys

PURE = [
    "streamguard.contracts",
    "streamguard.stats",
    "streamguard.core",
    "streamguard.guards",
    "streamguard.decisions",
    "streamguard.policy",
    "streamguard.sim",
    "streamguard.engine",
    "streamguard.evaluation",
    "streamguard.security",
]
CHECK = "import sys; assert not {'faust', 'aiokafka'} & set(sys.modules), sorted(sys.modules)"


def run_all(scripts: list[str]) -> list[tuple[int, str]]:
    """Run each script in a fresh interpreter, all at once; (return code, stderr) of each."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in scripts
    ]
    out = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        out.append((process.returncode, stderr))
    return out


def test_pure_packages_do_not_import_faust_or_aiokafka() -> None:
    in_order = "; ".join(f"import {name}" for name in PURE)
    # An import cycle only shows when a package is imported first in a fresh interpreter; the
    # packages that import core modules (and that core imports back) each get a run of their own.
    scripts = [
        f"{in_order}; {CHECK}",
        *(
            f"import {name}; {in_order}; {CHECK}"
            for name in ("streamguard.guards", "streamguard.decisions")
        ),
    ]
    for script, (code, stderr) in zip(scripts, run_all(scripts), strict=True):
        assert code == 0, f"{script}\n{stderr}"


def test_the_check_would_notice_aiokafka() -> None:
    ((code, stderr),) = run_all(["import aiokafka; " + CHECK])
    assert code != 0
    assert "AssertionError" in stderr
