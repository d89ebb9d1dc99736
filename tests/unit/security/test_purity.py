"""The security package is pure: it never pulls in Faust or a Kafka client."""

import subprocess
import sys


def test_security_does_not_import_faust_or_aiokafka() -> None:
    script = (
        "import sys, streamguard.security; "
        "assert not {'faust', 'aiokafka'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
