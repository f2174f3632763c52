#!/usr/bin/env python3
"""fault_proxy.py - an HTTPS proxy for integration tests that stands between the client and Azurite
and, at a set rate, injects faults: 503 with Retry-After, 503 with x-ms-retry-after-ms, 500
OperationTimedOut, a connection reset before forwarding, a reset after forwarding (the write landed
but its answer is lost), or a delay before forwarding. It can also shift the Date header (clock-skew
tests), or refuse every request carrying a bearer token with 403 AuthorizationPermissionMismatch, as
storage answers a service principal without a data role (--deny-bearer). It terminates TLS with the test server certificate and forwards to Azurite over TLS."""
import argparse, http.client, http.server, random, socket, ssl, struct, sys, threading, time, email.utils

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--upstream-port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--ca", required=True)
ap.add_argument("--rate", type=float, default=0.0)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--delay", type=float, default=2.0)
ap.add_argument("--date-offset", type=int, default=0, help="seconds added to the upstream Date header")
ap.add_argument("--deny-bearer", action="store_true", help="403 AuthorizationPermissionMismatch for bearer tokens")
ap.add_argument("--log", required=True)
args = ap.parse_args()

rng = random.Random(args.seed)
rng_lock = threading.Lock()
log_lock = threading.Lock()
FAULTS = ["503-retry-after", "503-retry-after-ms", "500", "reset-before", "reset-after", "delay"]
upstream_ctx = ssl.create_default_context(cafile=args.ca)
upstream_ctx.check_hostname = False  # the upstream is reached by address; the client checks the name
local = threading.local()


def log(line):
    with log_lock, open(args.log, "a") as f:
        f.write(line + "\n")


def pick_fault():
    with rng_lock:
        if rng.random() >= args.rate:
            return None
        return rng.choice(FAULTS)


def upstream():
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = http.client.HTTPSConnection("127.0.0.1", args.upstream_port, context=upstream_ctx, timeout=120)
        local.conn = conn
    return conn


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reset(self):
        # SO_LINGER 0 makes close() send a RST: the client sees a connection reset.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def reply_error(self, status, code, extra):
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f'<Message>injected by fault_proxy</Message></Error>').encode()
        self.send_response(status)
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def forward(self, body):
        for attempt in (1, 2):
            conn = upstream()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in ("connection", "keep-alive", "proxy-connection"):
                        conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                return resp, data
            except (OSError, http.client.HTTPException):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if args.deny_bearer and (self.headers.get("Authorization") or "").startswith("Bearer "):
            log(f"{time.time():.3f} {self.command} {self.path} denied bearer")
            body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
                    b'<Message>This request is not authorized to perform this operation using this permission.</Message></Error>')
            self.send_response(403)
            self.send_header("x-ms-error-code", "AuthorizationPermissionMismatch")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        fault = pick_fault()
        log(f"{time.time():.3f} {self.command} {self.path} range={self.headers.get('x-ms-range')} fault={fault or 'none'}")
        if fault == "503-retry-after":
            return self.reply_error(503, "ServerBusy", [("Retry-After", "1")])
        if fault == "503-retry-after-ms":
            return self.reply_error(503, "ServerBusy", [("x-ms-retry-after-ms", "300")])
        if fault == "500":
            return self.reply_error(500, "OperationTimedOut", [])
        if fault == "reset-before":
            return self.reset()
        if fault == "delay":
            time.sleep(args.delay)
        try:
            resp, data = self.forward(body)
        except Exception as e:  # the upstream is gone: tell the client as a gateway would
            log(f"upstream error {e!r}")
            return self.reply_error(502, "BadGateway", [])
        if fault == "reset-after":
            return self.reset()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("connection", "keep-alive", "transfer-encoding"):
                continue
            if k.lower() == "content-length":
                continue
            if k.lower() == "date" and args.date_offset:
                v = email.utils.formatdate(time.time() + args.date_offset, usegmt=True)
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        else:
            cl = resp.getheader("Content-Length")
            if cl is not None:
                self.send_header("Content-Length", cl)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def get_request(self):
        sock, addr = self.socket.accept()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # resets and client disconnects are expected here


srv = Server(("127.0.0.1", args.port), Handler)
print("ready", flush=True)
srv.serve_forever()
