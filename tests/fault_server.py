"""An OpenAI-compatible chat server on 127.0.0.1 that injects faults at set rates.

It exists only for what a real server will not do on demand: 429s, 500s, replies slower than
the client's timeout, verdicts that are not JSON, and an engine that is slow but alive (its
``/metrics`` counters keep moving while it holds a reply) or stalled (they freeze). Healthy
replies are valid verdicts that always pass, so any fail in a verdict table would have to come
from a fault. With ``reply``, healthy replies come from that function instead (request body in;
content, or content and finish reason, out): scripted teacher replies that are invalid,
truncated or duplicated.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, *, rate_429=0.0, rate_500=0.0, rate_slow=0.0, rate_garbage=0.0,
                 slow_s=2.0, seed=0, hold_s=0.0, stalled=False,
                 reply: Callable[[dict], str | tuple[str, str]] | None = None):
        self.rates = {"429": rate_429, "500": rate_500, "slow": rate_slow, "garbage": rate_garbage}
        self.slow_s = slow_s
        self.reply = reply
        # Every reply is held hold_s seconds; /metrics shows it running, its token counter
        # moving (alive) or frozen (stalled: the reply is then held until released).
        self.hold_s, self.stalled = hold_s, stalled
        self.release = threading.Event()
        self.running = 0
        self.tokens = 0
        self.received: Counter = Counter()  # requests per distinct message list
        self.injected: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/metrics"):
                    with server._lock:
                        if not server.stalled:
                            server.tokens += server.running
                        text = (f"vllm:num_requests_running{{model_name=\"fault\"}} {server.running}\n"
                                f"vllm:num_requests_waiting{{model_name=\"fault\"}} 0\n"
                                f"vllm:generation_tokens_total{{model_name=\"fault\"}} {server.tokens}\n")
                    data = text.encode()
                    self.send_response(200)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self._send(200, {"status": "ok"})

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                key = hashlib.sha256(json.dumps(request.get("messages"), sort_keys=True).encode()).hexdigest()
                with server._lock:
                    server.received[key] += 1
                    stalled = server.stalled
                if server.hold_s or stalled:
                    with server._lock:
                        server.running += 1
                    try:
                        if stalled:
                            server.release.wait()
                        else:
                            time.sleep(server.hold_s)
                    finally:
                        with server._lock:
                            server.running -= 1
                    if stalled:
                        return self._send(500, {"error": {"message": "released", "type": "server_error"}})
                fault = server._draw()
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if fault == "slow":
                    time.sleep(server.slow_s)
                content = ("I think the answer is fine but I will not write JSON." if fault == "garbage" else
                           json.dumps({"conclusion_reached": True, "score": 1.0, "criteria_met": ["x"],
                                       "rationale": "ok"}))
                finish = "stop"
                if server.reply and fault != "garbage":
                    content = server.reply(request)
                    content, finish = content if isinstance(content, tuple) else (content, "stop")
                body = {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "fault",
                        "choices": [{"index": 0, "finish_reason": finish,
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                self._send(200, body)

            def _send(self, status, body):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 refuses bursts of concurrent connections

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _draw(self) -> str:
        with self._lock:
            roll = self._rng.random()
            edge = 0.0
            for kind, rate in self.rates.items():
                edge += rate
                if roll < edge:
                    self.injected[kind] += 1
                    return kind
            self.injected["ok"] += 1
            return "ok"

    def set_rates(self, **rates) -> None:
        with self._lock:
            self.rates.update(rates)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
