#!/usr/bin/env python3
"""A malicious "controller" for the attack catalogue: it answers a real fleet-agent with whatever
the test put in its scenario folder, read again on every request so a test can change it between
agent runs without a restart.

  DIR/checkin.json          served as the body of every check-in answer (raw bytes, not re-encoded)
  DIR/checkin.endless       if present, the check-in answer is a JSON document that never ends
  DIR/artifacts/NAME        served for GET /v1/artifacts/NAME, with Range support
  DIR/artifacts.endless     if present, every artifact is a body without a length that never ends
  DIR/artifacts.throttle    if present, artifact bodies are sent at this many bytes per second
  DIR/artifacts.faults      JSON {"cut_every": BYTES, "delay_ms": MS}: a userspace stand-in for a bad
                            network where netem is missing: every response is cut (RST) after
                            cut_every body bytes, and every 64 KiB waits delay_ms

Status events the agent sends are appended to DIR/events.jsonl and acknowledged. Every request is
logged as one JSON line in DIR/requests.jsonl (method, path, range, status, body bytes sent; for a
check-in also the request's body bytes and top-level keys)."""
import argparse, json, os, re, socketserver, http.server, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--listen", type=int, required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--host", default="127.0.0.1")
args = ap.parse_args()
lock = threading.Lock()
ENDLESS_LIMIT = 1 << 30   # a safety net for the test machine, far beyond any signed length used


def log(entry):
    with lock, open(os.path.join(args.dir, "requests.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, data, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return 0
        rate = self.throttle() if ctype == "application/octet-stream" else None
        faults = self.faults() if ctype == "application/octet-stream" else None
        if faults:
            return self.faulty(data, faults)
        if not rate:
            self.wfile.write(data)
            return len(data)
        sent, start = 0, time.monotonic()
        try:
            while sent < len(data):
                chunk = data[sent:sent + 16384]
                self.wfile.write(chunk)
                sent += len(chunk)
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def faults(self):
        try:
            with open(os.path.join(args.dir, "artifacts.faults")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def faulty(self, data, faults):
        cut, delay = faults.get("cut_every"), faults.get("delay_ms", 0) / 1000.0
        limit = min(len(data), cut) if cut else len(data)
        sent = 0
        try:
            while sent < limit:
                chunk = data[sent:min(limit, sent + 65536)]
                self.wfile.write(chunk)
                sent += len(chunk)
                if delay:
                    time.sleep(delay)
            if sent < len(data):
                import socket, struct
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def throttle(self):
        try:
            with open(os.path.join(args.dir, "artifacts.throttle")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def endless(self, first, filler):
        """Sends a body without a length and without end, until the client hangs up."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(first)
            sent += len(first)
            while sent < ENDLESS_LIMIT:
                self.wfile.write(filler)
                sent += len(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/healthz":
            return self.reply(200, b"{}")
        m = re.fullmatch(r"/v1/artifacts/([^/]+)", path)
        if not m:
            return log({"method": "GET", "path": path, "status": 404, "sent": self.reply(404, b'{"error":"not found"}')})
        if os.path.exists(os.path.join(args.dir, "artifacts.endless")):
            sent = self.endless(b"", os.urandom(65536))
            return log({"method": "GET", "path": path, "range": self.headers.get("Range"), "status": 200, "sent": sent, "endless": True})
        name = m.group(1)
        file = os.path.join(args.dir, "artifacts", name)
        if "/" in name or name.startswith(".") or not os.path.isfile(file):
            return log({"method": "GET", "path": path, "status": 404, "sent": self.reply(404, b'{"error":"no such artifact"}')})
        with open(file, "rb") as f:
            data = f.read()
        rng = self.headers.get("Range")
        start = 0
        if rng:
            r = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(r.group(1)) if r else 0
            if start >= len(data):
                sent = self.reply(416, b"", extra={"Content-Range": "bytes */%d" % len(data)})
                return log({"method": "GET", "path": path, "range": rng, "status": 416, "sent": sent})
            sent = self.reply(206, data[start:], "application/octet-stream",
                              {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data))})
            return log({"method": "GET", "path": path, "range": rng, "status": 206, "sent": sent})
        sent = self.reply(200, data, "application/octet-stream")
        log({"method": "GET", "path": path, "range": None, "status": 200, "sent": sent})

    do_HEAD = do_GET

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self.body()
        if re.fullmatch(r"/v1/devices/[^/]+/checkin", path):
            if os.path.exists(os.path.join(args.dir, "checkin.endless")):
                sent = self.endless(b'{"deviceId":"', b"a" * 65536)
                return log({"method": "POST", "path": path, "status": 200, "sent": sent, "endless": True})
            file = os.path.join(args.dir, "checkin.json")
            if not os.path.isfile(file):
                return log({"method": "POST", "path": path, "status": 503, "sent": self.reply(503, b'{"error":"no scenario"}')})
            with open(file, "rb") as f:
                data = f.read()
            try:
                keys = sorted(json.loads(body or b"{}").keys())
            except (ValueError, AttributeError):
                keys = []
            return log({"method": "POST", "path": path, "status": 200, "sent": self.reply(200, data), "received": len(body),
                        "keys": keys})
        if re.fullmatch(r"/v1/devices/[^/]+/events", path):
            batch = json.loads(body or b"{}")
            events = batch.get("events", [])
            with lock, open(os.path.join(args.dir, "events.jsonl"), "a") as f:
                for e in events:
                    f.write(json.dumps(e) + "\n")
            acked = max([e.get("seq", 0) for e in events] or [0])
            return log({"method": "POST", "path": path, "status": 200,
                        "sent": self.reply(200, json.dumps({"ackedThrough": acked, "stored": len(events), "duplicates": 0}).encode())})
        log({"method": "POST", "path": path, "status": 404, "sent": self.reply(404, b'{"error":"not found"}')})


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server((args.host, args.listen), Handler).serve_forever()
