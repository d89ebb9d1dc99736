"""Tests for the streamguard.stats package surface."""

import ast
from pathlib import Path

from streamguard import stats
from streamguard.stats import (
    binning,
    change,
    concentration,
    divergence,
    equivalence,
    heavy_hitters,
    histogram,
    moments,
    multiple,
    onset,
    page_hinkley,
    running_moments,
    sequential,
    srm,
)

FORBIDDEN = {"scipy", "river", "faust", "aiokafka"}


def test_package_reexports_every_public_name() -> None:
    modules = [
        binning,
        change,
        concentration,
        divergence,
        equivalence,
        heavy_hitters,
        histogram,
        moments,
        multiple,
        onset,
        page_hinkley,
        running_moments,
        sequential,
        srm,
    ]
    public = {name for module in modules for name in module.__all__}
    assert set(stats.__all__) == public
    for module in modules:
        for name in module.__all__:
            assert getattr(stats, name) is getattr(module, name)


def test_runtime_code_never_imports_scipy_river_or_kafka() -> None:
    sources = sorted(Path(stats.__file__).parent.glob("*.py"))
    assert len(sources) == 19  # every module of the package is checked, none skipped
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            roots = {name.split(".")[0] for name in names}
            assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
