#!/usr/bin/env python3
"""webhook_receiver.py - a local HTTPS receiver of the appliance's alert webhooks for integration
tests: each POST's body (one JSON alert) is appended as one line to --log once answered 200. While
the file named by --refuse-while exists, POSTs are answered 503 (counted in --log-refused) and not
kept, as a receiver that is down for maintenance would."""
import argparse, http.server, json, os, ssl

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True, help="server certificate (PEM)")
ap.add_argument("--key", required=True, help="server key (PEM)")
ap.add_argument("--log", required=True, help="alerts taken, one JSON document per line")
ap.add_argument("--refuse-while", help="answer 503 while this file exists")
ap.add_argument("--log-refused", help="one line per POST refused")
args = ap.parse_args()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if args.refuse_while and os.path.exists(args.refuse_while):
            if args.log_refused:
                with open(args.log_refused, "a") as f:
                    f.write(self.path + "\n")
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"down for maintenance")
            return
        doc = json.loads(body)  # a body that is not JSON fails the request (500) and the test
        doc["_path"] = self.path
        doc["_content_type"] = self.headers.get("Content-Type", "")
        with open(args.log, "a") as f:
            f.write(json.dumps(doc) + "\n")
        self.send_response(200)
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
