"""Self-contained HTML reports of a deployment's verdicts and commands (``streamguard report``).

Pure: builds a string from verdict and command dicts; the CLI reads them from the broker or
from the files ``streamguard replay`` writes.
"""

from streamguard.report.html import build_report, report_data

__all__ = ["build_report", "report_data"]
