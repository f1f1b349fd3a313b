#!/usr/bin/env python3
"""sshr's HTTP directory (docs/providers.md): http_directory.py DB PORT; $SSHR_TOKEN: the bearer token required."""
import json, os, sqlite3, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def answer(db, user, target):
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT target, upstream, upstream_user, upstream_host_key, tunnel FROM users WHERE name = ?", (user,)).fetchall()
        keys = [k for (k,) in con.execute("SELECT key FROM user_keys WHERE name = ?", (user,))]
    for t, upstream, upstream_user, pins, tunnel in rows:
        if t == (target or ""):
            return {"upstream": upstream, "upstream_user": upstream_user, "authorized_keys": keys, "tunnel": tunnel,
                    "upstream_host_keys": [k for k in (pins or "").splitlines() if k.strip()]}
    return {"targets": sorted(r[0] for r in rows), "authorized_keys": keys} if rows and not target else None

class Directory(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: sshr reuses its connections
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    def do_POST(self):
        login = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        token = os.environ.get("SSHR_TOKEN")
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            status, found = 401, None
        else:
            found = answer(sys.argv[1], login["user"], login["target"])
            status = 200 if found else 404
        body = json.dumps(found or {"error": self.responses[status][0]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Directory)
print(server.server_address[1], flush=True)  # the port, useful with PORT 0
server.serve_forever()
