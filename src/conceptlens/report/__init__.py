"""A self-contained HTML report (no network: inline styles, scripts and images)."""

from .html import build_report, write_report

__all__ = ["build_report", "write_report"]
