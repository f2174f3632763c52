#!/usr/bin/env python3
"""fake_entra.py - a local stand-in for Entra ID's token endpoint for integration tests: HTTPS
(the test CA's server certificate), POST /TENANT/oauth2/v2.0/token with the client-credentials
grant. It checks what Entra ID checks: the tenant, the client id, the scope, and either the client
secret or the client assertion (RS256 signature verified with the registered certificate's public
key, x5t#S256 and x5t naming that certificate, aud = this endpoint's URL, iss = sub = client id,
times, a jti not seen before). A wrong one gets Entra's 401 invalid_client answer. Tokens are JWTs
Azurite's --oauth basic accepts and live --expires-in seconds. Each request is logged as
'POST PATH kind=secret|assertion -> STATUS [reason]'."""
import argparse, base64, hashlib, http.server, json, os, ssl, subprocess, tempfile, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True, help="server certificate (PEM)")
ap.add_argument("--key", required=True, help="server key (PEM)")
ap.add_argument("--tenant", required=True)
ap.add_argument("--client-id", required=True)
ap.add_argument("--secret-file", help="the registered client secret (first line)")
ap.add_argument("--client-cert", help="the registered client certificate (PEM)")
ap.add_argument("--expires-in", type=int, default=3599)
ap.add_argument("--log", required=True)
args = ap.parse_args()

secret = open(args.secret_file).readline().rstrip("\r\n") if args.secret_file else None
# The signature is checked by the openssl command (no Python crypto module needed).
client_cert = None
workdir = os.path.dirname(os.path.abspath(args.log))  # the test's temporary directory, removed by the test
if args.client_cert:
    client_cert = os.path.join(workdir, f"fake-entra-{args.port}-pub.pem")
    der = subprocess.run(["openssl", "x509", "-in", args.client_cert, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    subprocess.run(["openssl", "x509", "-in", args.client_cert, "-pubkey", "-noout", "-out", client_cert], check=True)
    thumb256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    thumb1 = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
seen_jti = set()


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_assertion(jwt, url):
    """None when the assertion is valid, else the reason."""
    if client_cert is None:
        return "no certificate registered"
    parts = jwt.split(".")
    if len(parts) != 3:
        return "not a JWS"
    header, claims = json.loads(unb64(parts[0])), json.loads(unb64(parts[1]))
    if header.get("alg") != "RS256" or header.get("typ") != "JWT":
        return f"header {header}"
    if header.get("x5t#S256") != thumb256 or header.get("x5t") != thumb1:
        return "x5t/x5t#S256 do not name the registered certificate"
    with tempfile.NamedTemporaryFile(dir=workdir, prefix="fake-entra-sig.") as sig:
        sig.write(unb64(parts[2]))
        sig.flush()
        check = subprocess.run(["openssl", "dgst", "-sha256", "-verify", client_cert, "-signature", sig.name],
                               input=(parts[0] + "." + parts[1]).encode(), capture_output=True)
    if check.returncode != 0:
        return "signature does not verify with the registered certificate"
    now = time.time()
    if claims.get("aud") != url:
        return f"aud {claims.get('aud')} is not {url}"
    if claims.get("iss") != args.client_id or claims.get("sub") != args.client_id:
        return "iss/sub are not the client id"
    if not (claims.get("nbf", now + 1000) <= now + 300 and claims.get("exp", 0) > now and claims["exp"] - claims["nbf"] <= 3600):
        return "times"
    jti = claims.get("jti")
    if not jti or jti in seen_jti:
        return "jti missing or replayed"
    seen_jti.add(jti)
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, status, body, kind="-", reason=""):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with open(args.log, "a") as f:
            f.write(f"POST {self.path} kind={kind} -> {status} {reason}\n")

    def refuse(self, status, error, aadsts, text, kind, reason):
        self.answer(status, {"error": error, "error_description": f"AADSTS{aadsts}: {text}\r\nTrace ID: 0",
                             "error_codes": [aadsts], "timestamp": "2026-01-01 00:00:00Z",
                             "trace_id": "0", "correlation_id": "0"}, kind, reason)

    def do_GET(self):
        if self.path == "/ready":
            data = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_error(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode(), strict_parsing=True).items()}
        host = self.headers.get("Host")
        url = f"https://{host}{self.path}"
        kind = "secret" if "client_secret" in form else "assertion" if "client_assertion" in form else "none"
        if self.path != f"/{args.tenant}/oauth2/v2.0/token":
            return self.refuse(400, "invalid_request", 90002, "Tenant not found.", kind, "tenant")
        if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return self.refuse(400, "invalid_request", 900144, "The request body must be a form.", kind, "content type")
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://storage.azure.com/.default":
            return self.refuse(400, "invalid_request", 70011, "The provided request must include a valid scope.", kind, "grant/scope")
        if form.get("client_id") != args.client_id:
            return self.refuse(400, "unauthorized_client", 700016, "Application not found in the directory.", kind, "client id")
        if kind == "secret":
            if secret is None or form["client_secret"] != secret:
                return self.refuse(401, "invalid_client", 7000215, "Invalid client secret provided.", kind, "wrong secret")
        elif kind == "assertion":
            if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return self.refuse(400, "invalid_request", 50027, "Invalid client assertion type.", kind, "assertion type")
            why = check_assertion(form["client_assertion"], url)
            if why:
                return self.refuse(401, "invalid_client", 700027, "Client assertion failed signature validation.", kind, why)
        else:
            return self.refuse(401, "invalid_client", 7000218, "The request body must contain client_assertion or client_secret.", kind, "no credential")
        now = int(time.time())
        token = ".".join([b64url({"typ": "JWT", "alg": "none"}),
                          b64url({"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{args.tenant}/",
                                  "iat": now - 60, "nbf": now - 60, "exp": now + args.expires_in, "appid": args.client_id,
                                  "oid": args.client_id}),
                          b64url({"sig": "none"})])
        self.answer(200, {"token_type": "Bearer", "expires_in": args.expires_in, "ext_expires_in": args.expires_in,
                          "access_token": token}, kind)


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
