#!/usr/bin/env python3
"""Throughput under load: 64 parallel bulk transfers through sshr, 1 and 2 workers,
against the same transfers straight to the upstream.

    perf/throughput_load.py [--short] [--parallel 64] [--mib 32] [--workers 1,2]

The light upstream (`light_upstream serve`, 2 workers) sinks data (`exec sink`, 2 MiB
windows, as OpenSSH); the load generator (`light_upstream load --mode bulk`, 2 threads)
opens --parallel sessions at once through sshr and each sends --mib MiB of channel data
in 32 KiB packets, then EOF, and waits for the channel to close. Aggregate MB/s is all
bytes over the span from the first transfer's start to the last one's end.

sshr decrypts and re-encrypts every byte (two cipher passes) while the client encrypts
once and the upstream decrypts once, and all share this machine's CPUs; so besides
MB/s the table gives sshr's CPU use and MB per sshr CPU-second (the per-core figure).
The "direct" row (no proxy) shows what the peers alone reach. With 2 CPUs, the 1 -> 2
worker step cannot double throughput: the peers need a core's worth too.

Environment: SSHR_PERF_NO_BUILD=1 skips `cargo build`; RUST_LOG (default info).
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
    ap.add_argument("--short", action="store_true", help="4 MiB per transfer")
    ap.add_argument("--parallel", type=int, default=64)
    ap.add_argument("--mib", type=float, default=32.0, help="MiB per transfer")
    ap.add_argument("--workers", default="1,2", help="sshr worker counts to compare")
    ap.add_argument("--cipher", default="aes128-gcm@openssh.com")
    ap.add_argument("--no-direct", action="store_true")
    ap.add_argument("--peer-threads", type=int, default=2)
    args = ap.parse_args()
    if args.short or os.environ.get("SSHR_PERF_SHORT") == "1":
        args.mib = 4.0
    nbytes = int(args.mib * 1024 * 1024)
    workers = [int(w) for w in args.workers.split(",")]

    common.build()
    common.raise_fd_limit()
    machine = common.machine()
    wd = common.Workdir()
    up = common.Upstream(wd, workers=args.peer_threads)

    def transfer(port):
        return common.run_load(
            common.load_cmd(
                port,
                wd,
                "bulk",
                connections=args.parallel,
                threads=args.peer_threads,
                bytes=nbytes,
                cipher=args.cipher,
                timeout_secs=600,
            ),
            timeout=700,
        )

    rows = []

    def row(name, res, wall, sshr_cpu, load_cpu, up_cpu, relayed=None):
        mb = res["bytes"] / 1e6
        rows.append(
            [
                name,
                f"{int(res['ok'])}/{args.parallel}",
                f"{mb:.0f}",
                f"{res['transfer_s']:.2f}",
                f"{res['mb_per_s']:.0f}",
                "n/a" if sshr_cpu is None else f"{100 * sshr_cpu / res['transfer_s']:.0f} %",
                "n/a" if not sshr_cpu else f"{mb / sshr_cpu:.0f}",
                f"{100 * load_cpu / wall:.0f} % / {100 * up_cpu / wall:.0f} %",
                f"{res['p50_ms'] / 1e3:.2f} / {res['p99_ms'] / 1e3:.2f}",
                "" if relayed is None else f"{relayed / 1e6:.0f}",
            ]
        )

    if not args.no_direct:
        u0, t0 = common.cpu_seconds(up.proc.pid), time.monotonic()
        res, load_cpu = transfer(up.port)
        wall = time.monotonic() - t0
        row("direct (no proxy)", res, wall, None, load_cpu, common.cpu_seconds(up.proc.pid) - u0)
        common.log(f"direct: {res['mb_per_s']:.0f} MB/s")

    for w in workers:
        proxy = common.Sshr(wd, up.port, up.host_key, workers=w)
        c0, u0, t0 = proxy.cpu_seconds(), common.cpu_seconds(up.proc.pid), time.monotonic()
        res, load_cpu = transfer(proxy.port)
        wall = time.monotonic() - t0
        sshr_cpu = proxy.cpu_seconds() - c0
        time.sleep(1.5)  # sshr publishes its metrics once a second
        relayed = proxy.metric("sshr_relayed_bytes_total")
        row(
            f"sshr --workers {w}",
            res,
            wall,
            sshr_cpu,
            load_cpu,
            common.cpu_seconds(up.proc.pid) - u0,
            relayed,
        )
        common.log(f"sshr --workers {w}: {res['mb_per_s']:.0f} MB/s")
        proxy.stop()
    up.stop()

    print(f"## {args.parallel} parallel bulk transfers ({args.cipher})")
    print()
    print(f"Machine: {machine}.")
    print(
        f"Command: perf/throughput_load.py --parallel {args.parallel} --mib {args.mib} "
        f"--workers {args.workers} --cipher {args.cipher}"
    )
    print()
    print(
        common.table(
            [
                "path",
                "transfers ok",
                "MB",
                "seconds",
                "aggregate MB/s",
                "sshr CPU (100 % = 1 core)",
                "MB per sshr CPU-second",
                "load gen / upstream CPU",
                "per-transfer s p50 / p99",
                "sshr relayed MB (metric)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
