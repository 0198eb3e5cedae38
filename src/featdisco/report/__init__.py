"""The explorer: a static, shareable site built from a fitted run directory.

``build_report(run_dir)`` writes ``run_dir/report/``: an ``index.html`` with plain JS and CSS,
and data shards (``.js`` files that hand their data to a global) loaded on demand, so that
the site opens from ``file://`` with no server and a 20k-cluster run opens as fast as a small
one.
"""

from featdisco.report.build import ReportStats, build_report

__all__ = ["ReportStats", "build_report"]
