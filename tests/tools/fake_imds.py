#!/usr/bin/env python3
"""fake_imds.py - a local stand-in for the managed-identity endpoint (IMDS form) for integration
tests: GET /metadata/identity/oauth2/token?api-version=...&resource=... with "Metadata: true" gets a
token JSON whose access_token is a JWT Azurite's --oauth basic accepts; the first --fail-first
requests get 503 (to exercise retries). Each request is logged as 'GET PATH metadata=V -> STATUS'."""
import argparse, base64, http.server, json, time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--fail-first", type=int, default=0)
ap.add_argument("--log", required=True)
args = ap.parse_args()
state = {"failures_left": args.fail_first}


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, status, body, ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.path != "/ready":
            with open(args.log, "a") as f:
                f.write(f"GET {self.path} metadata={self.headers.get('Metadata')} -> {status}\n")

    def do_GET(self):
        if self.path == "/ready":
            return self.answer(200, "{}")
        if not self.path.startswith("/metadata/identity/oauth2/token?"):
            return self.answer(404, '{"error":"not_found"}')
        if self.headers.get("Metadata") != "true":
            return self.answer(400, '{"error":"invalid_request","error_description":"Required metadata header not specified"}')
        if state["failures_left"] > 0:
            state["failures_left"] -= 1
            return self.answer(503, '{"error":"temporarily_unavailable"}')
        now = int(time.time())
        jwt = ".".join([b64url({"typ": "JWT", "alg": "none"}),
                        b64url({"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/ab1f708d-50f6-404c-a006-d71b2ac7a606/",
                                "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": "test"}),
                        b64url({"sig": "none"})])
        self.answer(200, json.dumps({"access_token": jwt, "client_id": "test", "expires_in": "3599",
                                     "expires_on": str(now + 3599), "ext_expires_in": "3599",
                                     "not_before": str(now - 60), "resource": "https://storage.azure.com/",
                                     "token_type": "Bearer"}))


http.server.HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
