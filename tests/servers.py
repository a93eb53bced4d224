"""Real servers for the remote-engine tests, on 127.0.0.1 only: llama-cpp-python's llama_cpp.server with a model,
and a tiny scripted HTTP server speaking vLLM's routes that fails on purpose (401, 404, 429, 500 mid-stream, cut or
malformed streams, silence)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

READY_TIMEOUT_S = 120


class LlamaCppServer:
    """`python -m llama_cpp.server` on a port the OS picks; ready once uvicorn says where it listens."""

    def __init__(self, model: Path, api_key: Optional[str] = None, extra: tuple[str, ...] = ()):
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", "0",
               "--n_ctx", "2048", "--n_threads", "1", *extra]
        if api_key:
            cmd += ["--api_key", api_key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def drain():  # keeps reading so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        self.url = None
        while self.url is None:
            try:
                line = lines.get(timeout=READY_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError("llama_cpp.server did not start in time:\n" + "".join(self.log[-20:]))
            if line is None:
                raise RuntimeError("llama_cpp.server exited:\n" + "".join(self.log[-20:]))
            m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class ScriptedVllm:
    """A real HTTP server on 127.0.0.1 that answers vLLM's routes; `completions` decides each completion request.

    completions(handler, n) is called with the request number n (0-based) and writes the whole response itself
    through the helpers below, so a test can fail the way it needs: a status, a stream cut after some events, an
    event that is not JSON, or silence until `release` is set.
    """

    def __init__(self, completions: Callable[["_Handler", int], None], key: Optional[str] = None):
        self.completions = completions
        self.key = key
        self.count = 0
        self.release = threading.Event()
        outer = self

        class Handler(_Handler):
            server_ref = outer

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up on purpose (a timeout test)
        pass


class _Handler(BaseHTTPRequestHandler):
    server_ref: ScriptedVllm
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def send_json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

    def event(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {text}\n\n".encode())
        self.wfile.flush()

    def cut(self) -> None:
        """Ends the connection mid-stream, as a crashing server does."""
        self.wfile.flush()
        self.close_connection = True

    def _authorised(self) -> bool:
        key = self.server_ref.key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.send_json(401, {"error": {"message": "Invalid API key", "code": 401}})
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": "tiny", "max_model_len": 2048}]})
        elif self.path == "/version":
            self.send_json(200, {"version": "0.0-scripted"})
        else:
            self.send_json(404, {"detail": "Not Found"})

    def do_POST(self):
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.body = body
        if self.path == "/tokenize":
            self.send_json(200, {"tokens": [1, 2, 3], "count": 3, "max_model_len": 2048})
        elif self.path == "/detokenize":
            self.send_json(200, {"prompt": "".join(f"<{t}>" for t in body["tokens"])})
        elif self.path == "/v1/completions":
            n = self.server_ref.count
            self.server_ref.count += 1
            if body.get("model") != "tiny":
                self.send_json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                return
            self.server_ref.completions(self, n)
        else:
            self.send_json(404, {"detail": "Not Found"})


def token_event(token_id: int, text: str, logprob: float = -0.5, finish: Optional[str] = None) -> dict:
    """One vLLM streamed completion chunk carrying one token (return_tokens_as_token_ids)."""
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish, "stop_reason": None,
                         "logprobs": {"tokens": [f"token_id:{token_id}"], "token_logprobs": [logprob],
                                      "top_logprobs": [{f"token_id:{token_id}": logprob,
                                                        f"token_id:{token_id + 1}": logprob - 1.0}],
                                      "text_offset": [0]}}]}


def stream_abc(h, n) -> None:
    """A ScriptedVllm handler: the rollout "abc", three tokens (ids 10, 11, 12), ended by max tokens."""
    h.start_stream()
    for i, text in enumerate(["a", "b", "c"]):
        h.event(token_event(10 + i, text, finish="length" if i == 2 else None))
    h.event("[DONE]")
