#!/usr/bin/env python3
"""Session set-up rate of sshr: handshakes per second per core, until saturation.

    perf/setup_rate.py [--short] [--levels 1,2,4,8,16,32,64] [--seconds 3] [--workers 1]
                       [--kex mlkem768x25519-sha256,curve25519-sha256]

One sshr worker (pinned to the first CPU) in front of the light upstream
(`examples/light_upstream.rs serve`, built on `protocol/`, so the upstream is not the
bottleneck); the load generator (`light_upstream load --mode setup`, pinned with the
upstream to the other CPUs) logs in with a publickey through sshr, as many logins in
flight as the level says, for a fixed time per level. A login is complete set-up on
both legs: client key exchange, client key verification, upstream connect, upstream key
exchange and publickey login, USERAUTH_SUCCESS to the client; then DISCONNECT.

The peers offer only the key exchange being measured, so that it is the one negotiated on
both legs (sshr keeps its default lists); with several --kex, each gets its own table,
from a new sshr and upstream, one after the other in the same run.

Per level it prints logins/s (wall clock), sshr's CPU use over the same span (from
/proc/<pid>/stat) and logins per sshr CPU-second: the "per core" figure, valid even when
the peers, not sshr, are the limit (on a 2-core machine they share one core and do
about as much crypto as sshr). Saturation is where logins/s stops growing while sshr's
CPU use nears 100 % of its core(s).

Environment: SSHR_PERF_NO_BUILD=1 skips `cargo build`; SSHR_CPUS / PEER_CPUS override
the pinning ("" disables it); RUST_LOG sets sshr's log level (default info, as shipped).
"""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="1 s per level, levels 1,4,16")
    ap.add_argument("--levels", default="1,2,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=3.0, help="per level")
    ap.add_argument("--max-logins", type=int, default=50_000, help="per level, a bound")
    ap.add_argument("--workers", type=int, default=1, help="sshr workers")
    ap.add_argument("--load-threads", type=int, default=1)
    ap.add_argument(
        "--kex",
        default="mlkem768x25519-sha256,curve25519-sha256",
        help="key exchanges to measure, one table each",
    )
    args = ap.parse_args()
    if args.short or os.environ.get("SSHR_PERF_SHORT") == "1":
        args.levels, args.seconds = "1,4,16", 1.0
    levels = [int(x) for x in args.levels.split(",")]

    common.build()
    common.raise_fd_limit()
    sshr_cpus, peer_cpus = common.default_cpus()
    if args.workers > 1:
        sshr_cpus = None
    sshr_cpus = os.environ.get("SSHR_CPUS", sshr_cpus) or None
    peer_cpus = os.environ.get("PEER_CPUS", peer_cpus) or None
    machine = common.machine()

    wd = common.Workdir()
    for kex in args.kex.split(","):
        measure(args, levels, kex, wd, sshr_cpus, peer_cpus, machine)


def measure(args, levels, kex, wd, sshr_cpus, peer_cpus, machine):
    """One table: a new upstream and sshr, the peers offering only `kex`."""
    up = common.Upstream(wd, workers=1, cpus=peer_cpus, kex=kex)
    proxy = common.Sshr(wd, up.port, up.host_key, workers=args.workers, cpus=sshr_cpus)
    # Warm-up: a few logins so lazily built state exists before the first level.
    common.run_load(
        common.load_cmd(proxy.port, wd, "setup", connections=20, concurrency=2, kex=kex),
        cpus=peer_cpus,
        timeout=120,
    )

    rows = []
    for c in levels:
        cpu0 = proxy.cpu_seconds()
        up0 = common.cpu_seconds(up.proc.pid)
        t0 = time.monotonic()
        res, load_cpu = common.run_load(
            common.load_cmd(
                proxy.port,
                wd,
                "setup",
                connections=args.max_logins,
                concurrency=c,
                threads=args.load_threads,
                duration_secs=args.seconds,
                timeout_secs=args.seconds + 60,
                kex=kex,
            ),
            cpus=peer_cpus,
            timeout=args.seconds + 120,
        )
        wall = time.monotonic() - t0
        sshr_cpu = proxy.cpu_seconds() - cpu0
        up_cpu = common.cpu_seconds(up.proc.pid) - up0
        ok = int(res["ok"])
        rows.append(
            [
                c,
                ok,
                int(res["failed"]),
                f"{res['rate']:.0f}",
                f"{100 * sshr_cpu / wall:.0f} %",
                f"{ok / sshr_cpu:.0f}" if sshr_cpu > 0 else "n/a",
                f"{1e3 * sshr_cpu / ok:.2f}" if ok else "n/a",
                f"{res['p50_ms']:.1f}",
                f"{res['p99_ms']:.1f}",
                f"{100 * load_cpu / wall:.0f} % / {100 * up_cpu / wall:.0f} %",
            ]
        )
        common.log(f"{kex}, concurrency {c}: {ok} logins, {res['rate']:.0f}/s")

    sessions = proxy.metric("sshr_sessions_total")
    proxy.stop()
    up.stop()
    print(f"## Session set-up rate through sshr, {kex} on both legs ({args.workers} worker(s))")
    print()
    print(f"Machine: {machine}. sshr CPUs: {sshr_cpus or 'any'}; peers: {peer_cpus or 'any'}.")
    print(
        f"Command: perf/setup_rate.py --levels {','.join(map(str, levels))} "
        f"--seconds {args.seconds} --workers {args.workers} --kex {kex}"
    )
    print()
    print(
        common.table(
            [
                "logins in flight",
                "logins",
                "failed",
                "logins/s (wall)",
                "sshr CPU",
                "logins per sshr CPU-second",
                "sshr CPU ms/login",
                "p50 ms",
                "p99 ms",
                "load gen / upstream CPU",
            ],
            rows,
        )
    )
    print()
    print(f"sshr_sessions_total at the end: {sessions}")




if __name__ == "__main__":
    main()
