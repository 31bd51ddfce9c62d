#!/usr/bin/env python3
"""A loopback HTTP proxy in front of the controller, for integration tests that need a hostile
or broken network: it can tamper with signed assignments, cut artifact downloads in the middle,
and throttle them. Every artifact request is logged as one JSON line."""
import argparse, base64, http.client, http.server, json, socketserver, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--listen", type=int, required=True)
ap.add_argument("--upstream", type=int, required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--tamper-assignment", default=None, help="replace the assigned sha256 with this one, keeping the signature")
ap.add_argument("--cut-after", type=int, default=None, help="close the first artifact download after this many body bytes")
ap.add_argument("--throttle", type=int, default=None, help="bytes per second for artifact bodies")
ap.add_argument("--stall-after", type=int, default=None,
                help="the first artifact download sends this many body bytes, then nothing more (the connection stays open)")
ap.add_argument("--flip-artifact-byte", action="store_true", help="flip one byte in the first chunk of every artifact body")
ap.add_argument("--log-bodies", action="store_true", help="log every non-artifact exchange: body bytes both ways, top-level keys")
args = ap.parse_args()
lock = threading.Lock()
state = {"cut_done": False}

def log(entry):
    with lock, open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")

def keys(data):
    try:
        doc = json.loads(data or b"null")
        return sorted(doc.keys()) if isinstance(doc, dict) else []
    except ValueError:
        return []

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        up = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        up.request(self.command, self.path, body=body, headers=headers)
        resp = up.getresponse()
        is_artifact = self.path.startswith("/v1/artifacts/") and self.command == "GET"
        if is_artifact:
            self.stream_artifact(resp)
        else:
            data = resp.read()
            if args.tamper_assignment and self.path.endswith("/checkin") and resp.status == 200:
                data = self.tamper(data)
            if args.log_bodies:
                log({"method": self.command, "path": self.path, "status": resp.status, "request_bytes": len(body or b""),
                     "response_bytes": len(data), "request_keys": keys(body), "response_keys": keys(data)})
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        up.close()

    def tamper(self, data):
        doc = json.loads(data)
        for u in doc.get("updates", []):
            payload = json.loads(base64.b64decode(u["assignment"]["payload"]))
            payload["sha256"] = args.tamper_assignment
            payload["package"]["sha256"] = args.tamper_assignment
            payload["package"]["url"] = "/v1/artifacts/" + args.tamper_assignment
            u["assignment"]["payload"] = base64.b64encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).decode()
        log({"tampered": True})
        return json.dumps(doc).encode()

    def stream_artifact(self, resp):
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding"):
                self.send_header(k, v)
        self.end_headers()
        cut = None
        stall = None
        with lock:
            if args.cut_after is not None and not state["cut_done"]:
                state["cut_done"] = True
                cut = args.cut_after
            if args.stall_after is not None and not state.get("stall_done"):
                state["stall_done"] = True
                stall = args.stall_after
        sent = 0
        start = time.monotonic()
        flip = args.flip_artifact_byte
        try:
            while True:
                chunk = resp.read(16384)
                if not chunk:
                    break
                if flip:
                    chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
                    flip = False
                if stall is not None and sent + len(chunk) > stall:
                    self.wfile.write(chunk[: stall - sent])
                    sent = stall
                    self.wfile.flush()
                    log({"stalled": self.path, "sent": sent})
                    time.sleep(300)   # until the client is killed and the test stops the proxy
                    break
                if cut is not None and sent + len(chunk) > cut:
                    chunk = chunk[: cut - sent]
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    self.wfile.flush()
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                if args.throttle:
                    ahead = sent / args.throttle - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        log({"path": self.path, "range": self.headers.get("Range"), "status": resp.status, "sent": sent, "cut": cut is not None})
        if cut is not None:
            try:
                self.connection.shutdown(2)
            except OSError:
                pass

    do_GET = forward
    do_POST = forward
    do_PUT = forward
    do_HEAD = forward

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

Server(("127.0.0.1", args.listen), Handler).serve_forever()
