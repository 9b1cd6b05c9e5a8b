"""A self-contained HTML report (no network: inline styles, scripts and images)."""

from .html import ReportOptions, RunContext, build_report, write_report
from .run import run_report

__all__ = ["ReportOptions", "RunContext", "build_report", "run_report", "write_report"]
