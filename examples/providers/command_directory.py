#!/usr/bin/env python3
"""sshr's command directory (docs/providers.md): command_directory.py DB %u %t %a; prints nothing for an unknown user."""
import json, sqlite3, sys

db, user, target, client_addr = sys.argv[1:5]
with sqlite3.connect(db) as con:
    rows = con.execute("SELECT target, upstream, upstream_user, upstream_host_key, tunnel FROM users WHERE name = ?", (user,)).fetchall()
    keys = [k for (k,) in con.execute("SELECT key FROM user_keys WHERE name = ?", (user,))]
for t, upstream, upstream_user, pins, tunnel in rows:
    if t == target:
        print(json.dumps({"upstream": upstream, "upstream_user": upstream_user, "authorized_keys": keys, "tunnel": tunnel,
                          "upstream_host_keys": [k for k in (pins or "").splitlines() if k.strip()]}))
        sys.exit(0)
if rows and not target:
    print(json.dumps({"targets": sorted(r[0] for r in rows), "authorized_keys": keys}))
