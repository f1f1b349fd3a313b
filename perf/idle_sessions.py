#!/usr/bin/env python3
"""Idle sessions: N authenticated sessions held open through sshr, and sshr's resident
memory per session.

    perf/idle_sessions.py [--short] [--sessions 1000] [--hold 3] [--workers 1]

sshr (one worker by default) in front of the light upstream; the load generator
(`light_upstream load --mode idle`) opens N sessions through sshr, each logged in with a
publickey and with an open `shell` channel (like an idle interactive user; `--no-channel`
to authenticate only), and holds them. sshr's VmRSS is read after a warm-up login (before),
once every session is up and has settled for a second (with N), and after they are
closed. Memory per session = (with N - before) / N. N is bounded by --max (default 10000,
the issue's figure); the whole run is bounded in time.

Environment: SSHR_PERF_NO_BUILD=1 skips `cargo build`; RUST_LOG (default info).
"""

import argparse
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="200 sessions, 1 s hold")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--max", type=int, default=10_000, help="upper bound on --sessions")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to hold them")
    ap.add_argument("--concurrency", type=int, default=32, help="logins in flight")
    ap.add_argument("--workers", type=int, default=1, help="sshr workers")
    ap.add_argument("--no-channel", action="store_true")
    args = ap.parse_args()
    if args.short or os.environ.get("SSHR_PERF_SHORT") == "1":
        args.sessions, args.hold = 200, 1.0
    n = min(args.sessions, args.max)

    common.build()
    # sshr holds two sockets per session (client and upstream legs).
    limit = common.raise_fd_limit(4 * n + 10_000)
    capped = None
    if 2 * n + 200 > limit:
        capped = n
        n = (limit - 200) // 2
        common.log(
            f"open file limit {limit} (hard limit; raising it needs CAP_SYS_RESOURCE): "
            f"{capped} sessions need {2 * capped} sockets in sshr; running {n}"
        )
    machine = common.machine()

    wd = common.Workdir()
    up = common.Upstream(wd, workers=1)
    proxy = common.Sshr(wd, up.port, up.host_key, workers=args.workers)
    common.run_load(
        common.load_cmd(proxy.port, wd, "setup", connections=5, concurrency=1), timeout=60
    )
    time.sleep(0.5)
    rss_before = proxy.rss_kib()
    up_before = common.rss_kib(up.proc.pid)

    # Generous bound: logins at a few hundred per second even on a busy machine.
    setup_budget = 60 + n / 50
    cmd = common.load_cmd(
        proxy.port,
        wd,
        "idle",
        connections=n,
        concurrency=args.concurrency,
        hold_secs=args.hold + 2,
        no_channel=args.no_channel,
        timeout_secs=setup_budget,
        login_timeout_secs=30,
    )
    out_path = wd.file("idle-load.out")
    loader = common.spawn(cmd, stdout=open(out_path, "w"), stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    ready = None
    while time.monotonic() - t0 < setup_budget + 10:
        text = open(out_path).read()
        for line in text.splitlines():
            if line.startswith("READY "):
                ready = dict(kv.split("=", 1) for kv in line.split()[1:])
        if ready is not None or loader.poll() is not None:
            break
        time.sleep(0.1)
    if ready is None:
        common.stop(loader)
        raise SystemExit("idle sessions did not come up:\n" + open(out_path).read())
    established = int(ready["ok"])
    time.sleep(1.5)  # settle; sshr publishes its metrics once a second
    rss_with = proxy.rss_kib()
    up_with = common.rss_kib(up.proc.pid)
    active = proxy.metric("sshr_sessions_active")
    try:
        loader.wait(timeout=args.hold + 60)
    except subprocess.TimeoutExpired:
        common.stop(loader)
    # Give sshr a moment to notice the closed connections.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (proxy.metric("sshr_sessions_active") or 0) > 0:
        time.sleep(0.2)
    time.sleep(0.5)
    rss_after = proxy.rss_kib()
    proxy.stop()
    up.stop()

    per = (rss_with - rss_before) / max(established, 1)
    up_per = (up_with - up_before) / max(established, 1)
    print(f"## Idle sessions through sshr ({args.workers} worker(s))")
    print()
    print(f"Machine: {machine}.")
    print(
        f"Command: perf/idle_sessions.py --sessions {n} --hold {args.hold} "
        f"--workers {args.workers}{' --no-channel' if args.no_channel else ''}"
    )
    if capped is not None:
        print(
            f"Asked for {capped} sessions; the open file limit ({limit}) allows {n} "
            "(two sockets per session in sshr)."
        )
    print()
    print(
        common.table(
            [
                "sessions asked",
                "established",
                "sshr_sessions_active",
                "set-up s",
                "sshr RSS before",
                "sshr RSS with sessions",
                "sshr RSS per session",
                "sshr RSS after close",
                "(light upstream RSS per session)",
            ],
            [
                [
                    n,
                    established,
                    "n/a" if active is None else int(active),
                    ready.get("setup_s", "?"),
                    f"{rss_before / 1024:.1f} MiB",
                    f"{rss_with / 1024:.1f} MiB",
                    f"{per:.1f} KiB",
                    f"{rss_after / 1024:.1f} MiB",
                    f"{up_per:.1f} KiB",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
