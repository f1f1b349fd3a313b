#!/usr/bin/env python3
"""Bulk transfer through sshr against HAProxy and a direct connection to the same sshd.

    perf/bulk.py [--size 2G] [--rounds 3] [--ciphers aes128-gcm@openssh.com,...]
                 [--directions up,down] [--workers 1] [--trace]

One OpenSSH sshd on loopback, and in front of it HAProxy (`mode tcp`, Debian's haproxy,
splice on in both directions, one thread) and sshr (the release binary, a generated
configuration, --workers 1). For each cipher and direction the three paths alternate in
one run: direct, HAProxy, sshr, direct, HAProxy, sshr, ... for --rounds rounds, after one
unrecorded warm-up transfer of 32 MB on each path.

- upload:   `ssh HOST 'date +%s%N >&2; exec wc -c' < FILE` (a sparse file of --size
  bytes; the byte count that comes back is checked);
- download: `ssh HOST 'date +%s%N >&2; exec head -c SIZE /dev/zero' > /dev/null`.

Every client uses `-c CIPHER -o KexAlgorithms=curve25519-sha256` on every path, so the
figures are the path's and not an algorithm's. sshr picks its own upstream leg.

For each transfer it records:
- wall time of the whole ssh command (set-up included, as a user sees it);
- data time: from the remote command's start (the `date` it prints; same machine, same
  clock) to the client's exit. The ratios use this one, since set-up differs between
  paths (OpenSSH's Nagle stalls, sshr's warm upstream connections) by 0.1-0.2 s, which
  is several per cent of a 2 GB transfer;
- the proxy's user and system CPU (utime and stime of /proc/PID/stat, all threads,
  before and after the ssh command);
- the whole machine's busy CPU (/proc/stat), which on a shared machine includes
  whatever else runs.

Sizes are decimal (2G = 2*10^9 bytes) and CPU is per GB = 10^9 bytes. Ratios are per
round (each proxied transfer against the direct one of the same round), reported as
median (min-max). The output is markdown for perf/RESULTS.md, then every transfer.

--trace adds, after the timed rounds, one more transfer of --trace-size per proxy for
each cipher and direction under `perf record` (not timed): the proxy's system calls
(raw_syscalls:sys_exit) and io_uring requests (io_uring:io_uring_submit_req and
io_uring_complete), summed into operations per MB relayed and the mean bytes of those
that moved data. That is the kernel share's shape: how many reads and writes, of what
size, how many SQEs each io_uring_enter carries. (HAProxy's splice count has both halves,
socket to pipe and pipe to socket.) Needs `perf` (Debian's linux-perf).

/proc counts CPU in clock ticks (10 ms): per-GB CPU figures want transfers of 1 GB or
more, and a small smoke run's CPU columns are only a sign of life.

Needs root (sshd; glommio's io_uring rings lock memory), /usr/sbin/sshd, ssh,
ssh-keygen, /usr/sbin/haproxy, cargo. Everything lives in a temporary directory, every
process started here is stopped by its pid at exit (also on SIGTERM, SIGINT, SIGHUP),
every wait is bounded.

Environment: SSHR_PERF_NO_BUILD=1 skips `cargo build --release --bin sshr`; SSHR_BIN
picks another binary; SSHR_PERF_KEEP=1 keeps the temporary directory (logs, configs).
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HAPROXY = "/usr/sbin/haproxy"
SSHD = "/usr/sbin/sshd"
KEX = "curve25519-sha256"
PATHS = ["direct", "haproxy", "sshr"]
LABEL = {"direct": "direct", "haproxy": "HAProxy", "sshr": "sshr"}
WARMUP = 32_000_000

# common.py handles SIGTERM; INT too even when started in the background (where the shell
# ignores it), and HUP.
for _sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, lambda *_: sys.exit(1))


def parse_size(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)[bB]?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 200M)")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()])


def human(n):
    return f"{n / 1e9:g} GB" if n >= 1e9 else f"{n / 1e6:g} MB"


def need(path, package):
    if not os.access(path, os.X_OK):
        sys.exit(f"perf/bulk.py: {path} is missing (apt-get install {package})")


class Sshd:
    """OpenSSH's sshd -D on a free loopback port, as tests/support starts it."""

    def __init__(self, wd):
        os.makedirs("/run/sshd", exist_ok=True)
        key = wd.file("sshd_host_ed25519")
        self.host_key = common.keygen(key)
        self.port = common.free_port()
        cfg = wd.file("sshd_config")
        with open(cfg, "w") as f:
            f.write(
                f"""HostKey {key}
ListenAddress 127.0.0.1:{self.port}
PidFile none
AuthorizedKeysFile {wd.authorized}
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel INFO
MaxStartups 100
"""
            )
        self.proc = common.spawn(
            [SSHD, "-D", "-e", "-f", cfg],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(wd.file("sshd.log"), "w"),
        )
        common.wait_port(self.port, proc=self.proc)


class Haproxy:
    """HAProxy in the foreground (-db), TCP mode, splice both ways, one thread."""

    def __init__(self, wd, backend_port, threads=1):
        self.port = common.free_port()
        cfg = wd.file("haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(
                f"""global
    nbthread {threads}
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    option splice-request
    option splice-response

listen bulk
    bind 127.0.0.1:{self.port}
    server sshd 127.0.0.1:{backend_port}
"""
            )
        self.proc = common.spawn(
            [HAPROXY, "-db", "-f", cfg],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(wd.file("haproxy.log"), "w"),
        )
        common.wait_port(self.port, proc=self.proc)


def proc_cpu(pid):
    """(user, system) CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / common.CLK_TCK, int(fields[12]) / common.CLK_TCK


def machine_busy():
    """Busy CPU seconds of the whole machine (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / common.CLK_TCK


class Rig:
    def __init__(self, args):
        self.args = args
        self.wd = common.Workdir()
        self.sshd = Sshd(self.wd)
        self.haproxy = Haproxy(self.wd, self.sshd.port, args.haproxy_threads)
        self.sshr = common.Sshr(
            self.wd,
            self.sshd.port,
            self.sshd.host_key,
            workers=args.workers,
            upstream_user="root",
        )
        self.pid = {"haproxy": self.haproxy.proc.pid, "sshr": self.sshr.proc.pid}
        self.data = self.wd.file("data")
        self.data_size = -1

    def target(self, path):
        if path == "direct":
            return self.sshd.port, "root"
        if path == "haproxy":
            return self.haproxy.port, "root"
        return self.sshr.port, "bench"

    def ssh(self, path, cipher, remote):
        port, user = self.target(path)
        # Options as tests/support's ssh_command, plus the cipher and kex.
        return [
            "ssh",
            "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
            "-o", "IdentitiesOnly=yes",
            "-i", self.wd.client_key,
            "-c", cipher,
            "-o", f"KexAlgorithms={KEX}",
            "-T",
            "-p", str(port),
            f"{user}@127.0.0.1",
            remote,
        ]  # fmt: skip

    def transfer(self, path, cipher, direction, size):
        """One transfer; returns a dict of its measures."""
        if direction == "up":
            if self.data_size != size:
                with open(self.data, "wb") as f:
                    f.truncate(size)  # sparse: reading it costs no disk
                self.data_size = size
            remote = "date +%s%N >&2; exec wc -c"
            stdin, stdout = open(self.data, "rb"), subprocess.PIPE
        else:
            remote = f"date +%s%N >&2; exec head -c {size} /dev/zero"
            stdin, stdout = subprocess.DEVNULL, subprocess.DEVNULL
        cmd = self.ssh(path, cipher, remote)
        timeout = 60 + size / 20e6
        pid = self.pid.get(path)
        cpu0 = proc_cpu(pid) if pid else None
        busy0 = machine_busy()
        t0 = time.monotonic()
        p = common.spawn(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{path} {direction} {cipher}: no end after {timeout:.0f} s")
        finally:
            # Also on SIGTERM/SIGINT (SystemExit, KeyboardInterrupt): stop the client too.
            common.stop(p)
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        end_ns = time.time_ns()
        wall = time.monotonic() - t0
        busy = machine_busy() - busy0
        cpu1 = proc_cpu(pid) if pid else None
        lines = err.strip().splitlines()
        if p.returncode != 0 or not lines or not lines[0].isdigit():
            raise RuntimeError(
                f"{path} {direction} {cipher}: ssh exited {p.returncode}: {err.strip()[-500:]}"
            )
        if direction == "up" and out.strip() != str(size):
            raise RuntimeError(
                f"{path} upload: the server counted {out.strip()!r} bytes, not {size}"
            )
        r = {
            "wall": wall,
            "data": (end_ns - int(lines[0])) / 1e9,
            "busy": busy,
        }
        if cpu0:
            r["user"] = cpu1[0] - cpu0[0]
            r["sys"] = cpu1[1] - cpu0[1]
        return r


def med_range(values, fmt="{:.2f}"):
    if not values:
        return "-"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def med(values, fmt="{:.2f}"):
    return fmt.format(statistics.median(values)) if values else "-"


# --- --trace: the proxy's system calls and io_uring requests ------------------------------


def syscall_names():
    names = {}
    for header in (
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "/usr/include/asm/unistd_64.h",
        "/usr/include/aarch64-linux-gnu/asm/unistd.h",
    ):
        try:
            for line in open(header):
                m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
                if m:
                    names[int(m.group(2))] = m.group(1)
        except OSError:
            continue
        if names:
            break
    return names


IO_SYSCALLS = {
    "read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
    "splice", "sendfile", "pread64", "pwrite64",
}  # fmt: skip
IO_URING_DATA = {
    "READ", "WRITE", "READV", "WRITEV", "READ_FIXED", "WRITE_FIXED", "RECV", "SEND",
    "RECVMSG", "SENDMSG", "SEND_ZC", "SENDMSG_ZC", "SPLICE", "READ_MULTISHOT",
}  # fmt: skip


def traced_transfer(rig, path, cipher, direction, size):
    """One transfer under `perf record` on the proxy; returns [(operation, count, mean
    bytes of those that moved data or None)]."""
    out = rig.wd.file(f"trace-{path}-{direction}.data")
    rec = common.spawn(
        [
            "perf", "record", "-q", "-o", out,
            "-e", "raw_syscalls:sys_exit",
            "-e", "io_uring:io_uring_submit_req",
            "-e", "io_uring:io_uring_complete",
            "-p", str(rig.pid[path]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(rig.wd.file("perf-record.log"), "a"),
    )  # fmt: skip
    time.sleep(1.0)  # let perf attach
    if rec.poll() is not None:
        raise RuntimeError("perf record exited: " + open(rig.wd.file("perf-record.log")).read())
    rig.transfer(path, cipher, direction, size)
    rec.send_signal(signal.SIGINT)
    try:
        rec.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    common.stop(rec)
    script = subprocess.run(
        ["perf", "script", "-i", out, "-F", "event,trace"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=600,
    )
    os.unlink(out)
    names = syscall_names()
    # count: operations; done, nbytes: how many returned a positive byte count, and its sum.
    count, done, nbytes = {}, {}, {}
    # A completion names its request, not its opcode: remember the opcode of each request
    # (the kernel reuses request slots, so the latest submission of a slot wins).
    opcode_of = {}
    sqes = 0
    for line in script.stdout.splitlines():
        res = 0
        if "sys_exit" in line:
            m = re.search(r"NR (\d+) = (-?\d+)", line)
            if not m:
                continue
            op = names.get(int(m.group(1)), "nr " + m.group(1))
            if op in IO_SYSCALLS:
                res = int(m.group(2))
            count[op] = count.get(op, 0) + 1
        elif "io_uring_submit_req" in line:
            m = re.search(r"req (\S+), user_data (\S+), opcode (\w+)", line)
            if not m:
                continue
            opcode_of[(m.group(1), m.group(2))] = m.group(3)
            op = "io_uring " + m.group(3)
            count[op] = count.get(op, 0) + 1
            sqes += 1
        elif "io_uring_complete" in line:
            m = re.search(r"req (\S+), user_data (\S+), result (-?\d+)", line)
            if not m:
                continue
            opcode = opcode_of.get((m.group(1), m.group(2)))
            if opcode not in IO_URING_DATA:
                continue
            op, res = "io_uring " + opcode, int(m.group(3))
        else:
            continue
        if res > 0:
            done[op] = done.get(op, 0) + 1
            nbytes[op] = nbytes.get(op, 0) + res
    if count.get("io_uring_enter"):
        per = sqes / count["io_uring_enter"]
        count[f"io_uring_enter ({per:.2f} SQEs each)"] = count.pop("io_uring_enter")
    return [(op, n, nbytes[op] / done[op] if op in done else None) for op, n in count.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size", type=parse_size, default=parse_size("2G"), help="bytes per transfer (2G, 200M)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--ciphers", default="aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"
    )
    ap.add_argument("--directions", default="up,down", help="up, down or both")
    ap.add_argument("--workers", type=int, default=1, help="sshr --workers")
    ap.add_argument("--haproxy-threads", type=int, default=1)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--trace", action="store_true", help="also record syscalls and io_uring ops")
    ap.add_argument("--trace-size", type=parse_size, default=parse_size("256M"))
    args = ap.parse_args()
    ciphers = [c for c in args.ciphers.split(",") if c]
    directions = [d for d in args.directions.split(",") if d]
    if any(d not in ("up", "down") for d in directions) or not directions:
        sys.exit("perf/bulk.py: --directions takes up, down or up,down")
    if not 1 <= args.rounds <= 100:
        sys.exit("perf/bulk.py: --rounds between 1 and 100")
    if os.geteuid() != 0:
        sys.exit("perf/bulk.py: needs root (sshd, io_uring's locked memory)")
    need(SSHD, "openssh-server")
    need(HAPROXY, "haproxy")
    if args.trace and not any(
        os.access(os.path.join(d, "perf"), os.X_OK) for d in os.environ["PATH"].split(":")
    ):
        sys.exit("perf/bulk.py: --trace needs perf (apt-get install linux-perf)")

    common.build(light=False)
    machine = common.machine()
    rig = Rig(args)
    gb = args.size / 1e9
    results = {}  # (cipher, direction) -> [ {path: measures} per round ]
    for cipher in ciphers:
        for direction in directions:
            if not args.no_warmup:
                for path in PATHS:
                    rig.transfer(path, cipher, direction, min(WARMUP, args.size))
            rounds = results.setdefault((cipher, direction), [])
            for i in range(args.rounds):
                r = {}
                for path in PATHS:
                    r[path] = rig.transfer(path, cipher, direction, args.size)
                    common.log(
                        f"{cipher} {direction} round {i + 1}/{args.rounds} {path}: "
                        f"data {r[path]['data']:.2f} s, wall {r[path]['wall']:.2f} s"
                        + (
                            f", proxy user {r[path]['user']:.2f} s sys {r[path]['sys']:.2f} s"
                            if "user" in r[path]
                            else ""
                        )
                    )
                rounds.append(r)

    traces = {}
    if args.trace:
        for cipher in ciphers:
            for direction in directions:
                for path in ("haproxy", "sshr"):
                    common.log(f"trace: {cipher} {direction} {path}")
                    traces[(cipher, direction, path)] = traced_transfer(
                        rig, path, cipher, direction, args.trace_size
                    )

    short = {
        "aes128-gcm@openssh.com": "aes128-gcm",
        "chacha20-poly1305@openssh.com": "chacha20-poly1305",
    }
    way = {"up": "upload", "down": "download"}
    print(f"## Bulk transfer: direct, HAProxy and sshr in front of one sshd ({human(args.size)})")
    print()
    print(f"Machine: {machine}. {ssh_version()}, {haproxy_version()}.")
    print(
        f"Command: perf/bulk.py --size {args.size} --rounds {args.rounds} --ciphers {args.ciphers} "
        f"--directions {args.directions} --workers {args.workers} "
        f"--haproxy-threads {args.haproxy_threads}"
    )
    print(
        f"Client kex {KEX} on every path; {human(args.size)} per transfer; median (min-max) of "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''}, direct, HAProxy and sshr "
        "alternating. Time is the data phase "
        "(remote command start to client exit); CPU is the proxy's, per GB, user + system."
    )
    print()
    rows = []
    for (cipher, direction), rounds in results.items():
        def ratio(a, b):
            return [r[a]["data"] / r[b]["data"] for r in rounds]

        def cpu(path, kind):
            return [r[path][kind] / gb for r in rounds]

        def total(path):
            return [(r[path]["user"] + r[path]["sys"]) / gb for r in rounds]

        rows.append(
            [
                short.get(cipher, cipher),
                way[direction],
                med([gb / r["direct"]["data"] for r in rounds]),
                med_range(ratio("haproxy", "direct")),
                med_range(ratio("sshr", "direct")),
                med_range(ratio("sshr", "haproxy")),
                f"{med(cpu('haproxy', 'user'))} + {med(cpu('haproxy', 'sys'))}",
                f"{med(cpu('sshr', 'user'))} + {med(cpu('sshr', 'sys'))}",
                # HAProxy can use no whole clock tick on a small transfer.
                med_range([s / h for s, h in zip(total("sshr"), total("haproxy")) if h > 0]),
            ]
        )
    print(
        common.table(
            [
                "cipher",
                "transfer",
                "direct GB/s",
                "HAProxy / direct",
                "sshr / direct",
                "sshr / HAProxy",
                "HAProxy CPU-s/GB user + sys",
                "sshr CPU-s/GB user + sys",
                "sshr CPU / HAProxy CPU",
            ],
            rows,
        )
    )
    print()
    print("Wall time of the whole ssh command (set-up included), seconds, and the whole")
    print("machine's busy CPU-s per GB (everything running, the other jobs included):")
    print()
    rows = []
    for (cipher, direction), rounds in results.items():
        row = [short.get(cipher, cipher), way[direction]]
        for path in PATHS:
            row.append(med([r[path]["wall"] for r in rounds]))
        for path in PATHS:
            row.append(med([r[path]["busy"] / gb for r in rounds]))
        rows.append(row)
    print(
        common.table(
            ["cipher", "transfer"]
            + [f"{LABEL[p]} wall s" for p in PATHS]
            + [f"{LABEL[p]} machine CPU-s/GB" for p in PATHS],
            rows,
        )
    )
    if traces:
        print()
        print(
            f"The proxies' kernel work, one traced transfer of {human(args.trace_size)} each "
            "(`perf record`, not timed): system calls and io_uring requests (SQEs, by "
            "opcode) per MB relayed, and the mean bytes of those that moved data (reads "
            "and writes that returned a byte count; EAGAIN and the like left out). "
            "Operations under 0.05 per MB are left out."
        )
        print()
        rows = []
        mb = args.trace_size / 1e6
        for (cipher, direction, path), ops in traces.items():
            for op, n, mean in sorted(ops, key=lambda o: -o[1]):
                if n / mb < 0.05:
                    continue
                rows.append(
                    [
                        short.get(cipher, cipher),
                        way[direction],
                        LABEL[path],
                        op,
                        f"{n / mb:.2f}",
                        "" if mean is None else f"{mean:,.0f}",
                    ]
                )
        headers = ["cipher", "transfer", "proxy", "operation", "per MB", "mean bytes moved"]
        print(common.table(headers, rows))
    print()
    print("Each transfer, data s (wall s) [proxy user + sys CPU s]:")
    for (cipher, direction), rounds in results.items():
        for i, r in enumerate(rounds):
            parts = []
            for path in PATHS:
                m = r[path]
                cpu = f" [{m['user']:.2f} + {m['sys']:.2f}]" if "user" in m else ""
                parts.append(f"{path} {m['data']:.2f} ({m['wall']:.2f}){cpu}")
            name = f"{short.get(cipher, cipher)} {way[direction]} round {i + 1}"
            print(f"- {name}: " + "; ".join(parts))


def ssh_version():
    v = subprocess.run(["ssh", "-V"], stderr=subprocess.PIPE, text=True, timeout=10).stderr
    return v.split(",")[0].strip()


def haproxy_version():
    v = subprocess.run([HAPROXY, "-v"], stdout=subprocess.PIPE, text=True, timeout=10).stdout
    m = re.search(r"version (\S+)", v)
    return f"HAProxy {m.group(1) if m else '?'}"


if __name__ == "__main__":
    main()
