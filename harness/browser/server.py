"""``skillsweep view``: the run browser on a local HTTP server (127.0.0.1 only).

The page is rebuilt from the run folder on every load, so a reload shows verdicts written
since (e.g. by a judge still running).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.browser.data import build_payload
from harness.browser.page import render_page


def make_server(run: str | Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server showing a run's browser page, rebuilt from the run on each request."""
    build_payload(run)  # fail now, naming the file, rather than on the first request

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/index.html"):
                self.send_error(404)
                return
            body = render_page(build_payload(run)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((host, port), Handler)
