"""Shared plumbing of the perf/ scripts: build, keys, the light upstream, sshr, the load
generator, /proc readings and markdown tables.

Everything runs on loopback, every process started here is stopped here (by its own
pid), and every wait is bounded. Needs root (glommio's io_uring rings lock memory; root
is exempt), Python 3 standard library, `ssh-keygen`, `cargo`.
"""

import atexit
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SSHR = os.environ.get("SSHR_BIN", os.path.join(TARGET, "release", "sshr"))
LIGHT = os.environ.get(
    "SSHR_LIGHT_BIN", os.path.join(TARGET, "release", "examples", "light_upstream")
)
CLK_TCK = os.sysconf("SC_CLK_TCK")

_started = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def build(light=True):
    """Build the release sshr and, with `light`, the light peers (skip with
    SSHR_PERF_NO_BUILD=1)."""
    if os.environ.get("SSHR_PERF_NO_BUILD") == "1":
        return
    what = ["--bin", "sshr"] + (["--example", "light_upstream"] if light else [])
    log("building: cargo build --release " + " ".join(what))
    subprocess.run(
        ["cargo", "build", "--release"] + what,
        cwd=ROOT,
        check=True,
        timeout=1800,
    )


def raise_fd_limit(n=200_000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def keygen(path):
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-C", "perf", "-t", "ed25519", "-f", path],
        check=True,
        timeout=30,
    )
    with open(path + ".pub") as f:
        return f.read().strip()


def taskset(cpus):
    """Prefix pinning a command to `cpus` ("0", "1", "0,1"), if given and possible."""
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus]
    return []


def _stop_all():
    for p in reversed(_started):
        stop(p)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    _started.append(p)
    return p


def stop(p, timeout=5.0):
    """Stop a process this script started (by its pid), politely first."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    if p in _started:
        _started.remove(p)


class Workdir:
    """Temporary directory with a client key, the proxy's host and upstream keys."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="sshr-perf-")
        if os.environ.get("SSHR_PERF_KEEP") == "1":
            log(f"keeping {self.path} (logs, configs)")
        else:
            atexit.register(shutil.rmtree, self.path, True)
        self.client_key = os.path.join(self.path, "client")
        self.client_pub = keygen(self.client_key)
        self.host_key = os.path.join(self.path, "ssh_host_ed25519_key")
        keygen(self.host_key)
        self.upstream_key = os.path.join(self.path, "upstream_ed25519")
        self.upstream_pub = keygen(self.upstream_key)
        # The light upstream accepts both the proxy's key and the client's (direct runs).
        self.authorized = os.path.join(self.path, "upstream_authorized")
        with open(self.authorized, "w") as f:
            f.write(self.upstream_pub + "\n" + self.client_pub + "\n")

    def file(self, name):
        return os.path.join(self.path, name)


class Upstream:
    """The light upstream (`light_upstream serve`)."""

    def __init__(self, wd, workers=1, cpus=None, max_secs=3600, kex=None):
        self.port = free_port()
        out = wd.file(f"upstream-{self.port}.out")
        self.proc = spawn(
            taskset(cpus)
            + [
                LIGHT,
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--authorized",
                wd.authorized,
                "--workers",
                str(workers),
                "--max-secs",
                str(max_secs),
            ]
            + (["--kex", kex] if kex else []),
            stdout=open(out, "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        self.host_key = None
        while time.monotonic() < deadline and self.host_key is None:
            if self.proc.poll() is not None:
                raise RuntimeError("light upstream exited: " + open(out).read())
            for line in open(out).read().splitlines():
                if line.startswith("HOSTKEY "):
                    self.host_key = line[len("HOSTKEY ") :].strip()
            time.sleep(0.02)
        if self.host_key is None:
            raise RuntimeError("light upstream did not start: " + open(out).read())
        wait_port(self.port, proc=self.proc)

    def stop(self):
        stop(self.proc)


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Sshr:
    """`sshr --config` in front of one upstream, user `bench` -> upstream_user@upstream."""

    def __init__(
        self,
        wd,
        upstream_port,
        upstream_host_key,
        workers=1,
        cpus=None,
        extra="",
        upstream_user="bench",
    ):
        self.port = free_port()
        self.metrics_port = free_port()
        cfg = wd.file(f"sshr-{self.port}.toml")
        with open(cfg, "w") as f:
            f.write(
                f"""listen = ["127.0.0.1:{self.port}"]
host_keys = [{toml_str(wd.host_key)}]
upstream_key = {toml_str(wd.upstream_key)}
metrics_listen = "127.0.0.1:{self.metrics_port}"

[limits]
max_sessions_per_shard = 50000
auth_timeout_secs = 120
shutdown_grace_secs = 1
{extra}
[[users]]
name = "bench"
upstream = "127.0.0.1:{upstream_port}"
upstream_user = {toml_str(upstream_user)}
authorized_keys = [{toml_str(wd.client_pub)}]
upstream_host_key = {toml_str(upstream_host_key)}
"""
            )
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.log_path = wd.file(f"sshr-{self.port}.log")
        self.proc = spawn(
            taskset(cpus) + [SSHR, "--config", cfg, "--workers", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "w"),
            env=env,
        )
        try:
            wait_port(self.port, proc=self.proc)
        except RuntimeError:
            raise RuntimeError("sshr did not start; log:\n" + self.log_tail())

    def log_tail(self, n=20):
        try:
            return "\n".join(open(self.log_path).read().splitlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def metric(self, name):
        """Sum of a Prometheus metric over its label sets, None if absent/unreachable."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as r:
                text = r.read().decode()
        except OSError:
            return None
        total = None
        for line in text.splitlines():
            m = re.match(re.escape(name) + r"(\{[^}]*\})?\s+(\S+)", line)
            if m:
                total = (total or 0.0) + float(m.group(2))
        return total

    def stop(self):
        stop(self.proc)


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command: state is field 3; utime, stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load_cmd(target_port, wd, mode, user="bench", **opts):
    cmd = [
        LIGHT,
        "load",
        "--target",
        f"127.0.0.1:{target_port}",
        "--user",
        user,
        "--key",
        wd.client_key,
        "--mode",
        mode,
    ]
    for k, v in opts.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        cmd += [flag] if v is True else [flag, str(v)]
    return cmd


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v) if "." in v or v.isdigit() else v
                except ValueError:
                    out[k] = v
            return out
    return None


def run_load(cmd, cpus=None, timeout=600):
    """Run the load generator to the end; returns (result dict, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = spawn(taskset(cpus) + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        raise RuntimeError(f"load generator timed out after {timeout} s")
    if p in _started:
        _started.remove(p)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_result(out)
    if res is None:
        raise RuntimeError(f"load generator failed ({p.returncode}):\n{out}\n{err}")
    if err.strip():
        log(err.strip())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res, cpu


def table(headers, rows):
    """A markdown table (right-aligned numbers)."""
    out = ["| " + " | ".join(headers) + " |"]
    out.append(
        "| "
        + " | ".join("---:" if i else "---" for i in range(len(headers)))
        + " |"
    )
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1 = os.getloadavg()[0]
    return f"{os.cpu_count()} CPUs ({model}), load average {load1:.2f} at start"


def default_cpus():
    """Pinning for (sshr, peers): sshr on CPU 0, peers on the others, when possible."""
    n = len(os.sched_getaffinity(0))
    if n >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        return str(cpus[0]), ",".join(str(c) for c in cpus[1:])
    return None, None
