"""Shared by the Python checks: runs `fulfilld sandbox` as a process on a free port, with a
local HTTP server standing in for the engine that records every webhook it receives."""

import http.server
import os
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, seconds=60):
    deadline = time.time() + seconds
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"{what} did not start")
            time.sleep(0.05)


class Sandbox:
    """`with Sandbox(binary, {"FULFILLD__…": …}) as sb:` — `sb.base` is the sandbox's URL,
    `sb.received` the webhooks delivered so far as (body bytes, headers)."""

    def __init__(self, binary, settings):
        self.binary, self.settings, self.received = binary, settings, []

    def __enter__(self):
        received = self.received

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((body, self.headers))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        port, hook_port = free_port(), free_port()
        self.hook = http.server.HTTPServer(("127.0.0.1", hook_port), Hook)
        threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        env = dict(os.environ)
        env.update({
            "FULFILLD__SANDBOX__ADDR": f"127.0.0.1:{port}",
            "FULFILLD__SANDBOX__WEBHOOK_TARGET": f"http://127.0.0.1:{hook_port}",
            "RUST_LOG": "warn",
            # The sandbox writes its PayPal certificate; keep it out of the working tree.
            "FULFILLD__SANDBOX__PAYPAL_CERT_FILE": os.path.join(tempfile.mkdtemp(), "paypal-cert.pem"),
        })
        env.update(self.settings)
        self.proc = subprocess.Popen([self.binary, "sandbox"], env=env)
        self.base = f"http://127.0.0.1:{port}"
        wait_port(port, self.proc, "sandbox")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.hook.shutdown()
        return False
