"""``featdisco report`` and ``featdisco serve``: build the explorer of a run, and serve it on
127.0.0.1 for those who prefer a URL to a file (the report itself needs no server)."""

from __future__ import annotations

import functools
import http.server
import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from featdisco.cli.common import console, err_console, new_or_existing_dir
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir


def _build(run_dir: Path, output: Path | None, search: bool, quiet: bool,
           min_transcripts: int | None = None, map_points: int | None = None) -> Path:
    from featdisco.report import build_report
    from featdisco.report.map import MAP_POINTS
    from featdisco.rundir import open_run

    with open_run(run_dir, write=True):  # it writes report/ into the run: one writer at a time
        stats = build_report(run_dir, output, search=search, min_transcripts=min_transcripts,
                             map_points=map_points or MAP_POINTS)
    if not quiet:
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in stats.seconds.items())
        err_console.print(f"built in {sum(stats.seconds.values()):.1f}s ({timing})", markup=False)
        console.print(f"{stats.clusters:,} clusters, {stats.transcripts:,} transcripts, {stats.pieces:,} pieces: "
                      f"{stats.files:,} files, {stats.bytes / 1e6:.1f} MB; the first view loads "
                      f"{stats.first_view_bytes / 1e3:.0f} kB", markup=False)
        console.print(f"open {(stats.path / 'index.html').resolve().as_uri()}", markup=False)
    return stats.path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the report folder, without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        return


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``serve`` to the featdisco command."""

    @app.command("report")
    def report_cmd(
        run_dir: Annotated[Path, typer.Argument(
            help="A finished run directory, or a `featdisco transform` output folder.")],
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="Folder for the site (default: RUN_DIR/report).")] = None,
        search: Annotated[bool, typer.Option(
            "--search/--no-search", help="Build the search index over labels, features and piece text.")] = True,
        open_: Annotated[bool, typer.Option("--open", help="Open the report in a browser when built.")] = False,
        min_transcripts: Annotated[int | None, typer.Option(
            "--min-transcripts", min=1, help="Hide clusters drawn from fewer than N distinct transcripts "
            "(with the private ones, until 'Show private clusters' is ticked); default: the run's, else 1.",
            show_default=False)] = None,
        map_points: Annotated[int | None, typer.Option(
            "--map-points", min=1, help="Most points the map lays out (cluster centroids plus a sample "
            "of features; default 20000).", show_default=False)] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    ) -> None:
        """Build a static explorer of a run: overview, clusters by kind, cluster and transcript
        pages, search, a map and plots (and any analyses). It opens from file:// with no
        server or internet, so the folder can be zipped and shared; untrusted text is shown
        as text, and clusters the rater flagged private (or drawn from fewer than
        --min-transcripts transcripts) are hidden until "Show private clusters" is ticked."""
        check_run_dir(run_dir)
        if output is not None:
            new_or_existing_dir(output, "-o")
        path = _build(run_dir, output, search, quiet, min_transcripts, map_points)
        if open_:
            webbrowser.open((path / "index.html").resolve().as_uri())

    @app.command("serve")
    def serve_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A run directory (its report is built if missing).")],
        port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")] = 8765,
        rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the report before serving.")] = False,
        open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    ) -> None:
        """Serve a run's report on http://127.0.0.1:PORT/ (local only) until Ctrl-C."""
        root = check_run_dir(run_dir) / "report"
        if rebuild or not (root / "index.html").exists():
            root = _build(run_dir, None, True, False)
        handler = functools.partial(_QuietHandler, directory=str(root))
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as e:
            raise FeatdiscoError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}; try --port 0") from None
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        console.print(f"serving {root} at {url} (Ctrl-C to stop)", markup=False)
        if open_:
            threading.Timer(0.3, webbrowser.open, args=(url,)).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
