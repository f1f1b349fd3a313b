#!/usr/bin/env bash
# SSH VPN tunnel (`ssh -w`) throughput and ping round trip through sshr versus a direct
# `ssh -w` to the same sshd, in the network namespaces of tests/e2e_tunnel.rs:
#
#   pc --10.200.1.0/24-- px (sshr) --10.200.2.0/24-- srv (sshd) --10.200.3.0/24-- lab
#    `--10.200.4.0/24-- out        tunnel: pc tun0 192.168.6.2 <-> srv tun0 192.168.6.1
#
# The lab host pings the outside host and sends it MIB MiB over TCP through the tunnel.
# For the direct runs px routes (kernel forwarding) instead of proxying, so both paths
# cross the same links. Both use the same client cipher and kex. Prints a markdown
# table. Needs root, /dev/net/tun, ip, ping, python3, sshd, ssh and a release build:
#
#   cargo build --release -p sshr && sudo perf/tunnel.sh [MIB] [RUNS]
set -euo pipefail

MIB=${1:-256}
RUNS=${2:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SSHR=${SSHR:-$HERE/target/release/sshr}
CIPHER=${CIPHER:-aes128-gcm@openssh.com}
KEX=curve25519-sha256
P=sshr-perf-$$
DIR=$(mktemp -d /tmp/sshr-perf-tunnel.XXXXXX)
PIDS=()

[ "$(id -u)" = 0 ] || { echo "perf/tunnel.sh: needs root" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "perf/tunnel.sh: /dev/net/tun is missing" >&2; exit 1; }
[ -x "$SSHR" ] || { echo "perf/tunnel.sh: build first: cargo build --release -p sshr" >&2; exit 1; }

ns() { echo "$P-$1"; }
# Not for background jobs: `in_ns ... &` would fork a subshell, and $! would not be the
# process (`ip netns exec` execs the command, so `ip netns exec NS cmd &` is).
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for n in pc px srv lab out; do
        ip netns pids "$(ns $n)" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$(ns $n)" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

# --- hosts and links ---------------------------------------------------------------
for n in pc px srv lab out; do
    ip netns add "$(ns $n)"
    ip -n "$(ns $n)" link set lo up
done
link() { # hostA addrA hostB addrB
    ip link add "to-$3" netns "$(ns "$1")" type veth peer name "to-$1" netns "$(ns "$3")"
    ip -n "$(ns "$1")" addr add "$2" dev "to-$3"
    ip -n "$(ns "$1")" link set "to-$3" up
    ip -n "$(ns "$3")" addr add "$4" dev "to-$1"
    ip -n "$(ns "$3")" link set "to-$1" up
}
link pc 10.200.1.1/24 px 10.200.1.2/24
link px 10.200.2.1/24 srv 10.200.2.2/24
link srv 10.200.3.1/24 lab 10.200.3.2/24
link pc 10.200.4.1/24 out 10.200.4.2/24
ip -n "$(ns lab)" route add default via 10.200.3.1
ip -n "$(ns out)" route add 10.200.3.0/24 via 10.200.4.1
# For the direct runs: the PC reaches the lab's SSH server through px.
ip -n "$(ns pc)" route add 10.200.2.0/24 via 10.200.1.2
ip -n "$(ns srv)" route add 10.200.1.0/24 via 10.200.2.1
for n in pc srv px; do in_ns $n sysctl -qw net.ipv4.ip_forward=1; done

# --- keys, sshd, sshr ----------------------------------------------------------------
for k in sshd_host upstream user sshr_host; do ssh-keygen -q -N '' -t ed25519 -f "$DIR/$k"; done
FORCED="ip addr add 192.168.6.1 peer 192.168.6.2 dev tun0; ip link set tun0 up; ip route add 10.200.4.2/32 via 192.168.6.2 dev tun0"
{
    echo "tunnel=\"0\",command=\"$FORCED\" $(cat "$DIR/upstream.pub")"
    echo "tunnel=\"0\",command=\"$FORCED\" $(cat "$DIR/user.pub")"
} >"$DIR/authorized_keys"
cat >"$DIR/sshd_config" <<EOF
HostKey $DIR/sshd_host
ListenAddress 10.200.2.2:22
PidFile none
AuthorizedKeysFile $DIR/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitTunnel yes
EOF
cat >"$DIR/sshr.toml" <<EOF
listen = ["10.200.1.2:2222"]
host_keys = ["$DIR/sshr_host"]
upstream_key = "$DIR/upstream"
workers = 1

[[users]]
name = "alice"
upstream = "10.200.2.2:22"
upstream_user = "root"
tunnel = "point-to-point"
authorized_keys = ["$(cat "$DIR/user.pub")"]
EOF
mkdir -p /run/sshd
ip netns exec "$(ns srv)" /usr/sbin/sshd -D -e -f "$DIR/sshd_config" 2>"$DIR/sshd.log" &
PIDS+=($!)
RUST_LOG=warn ip netns exec "$(ns px)" "$SSHR" --config "$DIR/sshr.toml" 2>"$DIR/sshr.log" &
SSHR_PID=$!
PIDS+=($SSHR_PID)

wait_port() { # host addr port
    for _ in $(seq 200); do
        in_ns "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $2:$3" >&2
    return 1
}
wait_port px 10.200.2.2 22
wait_port pc 10.200.1.2 2222

cat >"$DIR/recv.py" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.200.4.2", 5001)); s.listen(1); s.settimeout(120)
c, _ = s.accept(); c.settimeout(120)
while c.recv(1 << 20):
    pass
c.close()
EOF
cat >"$DIR/send.py" <<'EOF'
import socket, sys, time
size = int(sys.argv[1]) << 20
deadline = time.time() + 10
while True:
    try:
        s = socket.create_connection(("10.200.4.2", 5001), timeout=5); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.05)
s.settimeout(120)
chunk = b"\xa5" * (1 << 20)
t0 = time.monotonic()
for _ in range(size >> 20):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
while s.recv(4096):
    pass
print("%.3f" % (time.monotonic() - t0))
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One tunnel: bring it up, ping, transfer, tear down. Prints "setup_ms rtt_avg mbps cpu_s".
measure() { # direct|sshr
    local target port user
    if [ "$1" = direct ]; then target=10.200.2.2; port=22; user=root; else target=10.200.1.2; port=2222; user=alice; fi
    local t0 t1
    t0=$(date +%s%N)
    ip netns exec "$(ns pc)" ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR -i "$DIR/user" \
        -c "$CIPHER" -o KexAlgorithms=$KEX -o Tunnel=point-to-point -w 0:0 -o ExitOnForwardFailure=yes \
        -o PermitLocalCommand=yes \
        -o "LocalCommand=ip addr add 192.168.6.2 peer 192.168.6.1 dev tun0; ip link set tun0 up; ip route add 10.200.3.0/24 via 192.168.6.1 dev tun0" \
        -T -p $port $user@$target >"$DIR/client.log" 2>&1 &
    local client=$!
    local up=0
    while [ $(($(date +%s%N) - t0)) -lt 20000000000 ]; do
        if in_ns lab ping -n -c 1 -W 0.1 10.200.4.2 >/dev/null 2>&1; then up=1; break; fi
        sleep 0.01
    done
    t1=$(date +%s%N)
    [ $up = 1 ] || { echo "tunnel ($1) did not come up" >&2; cat "$DIR/client.log" >&2; kill $client; return 1; }
    # The tunnel must be the one just opened, not a leftover.
    kill -0 $client || { echo "ssh ($1) exited" >&2; cat "$DIR/client.log" >&2; return 1; }
    local rtt
    rtt=$(in_ns lab ping -n -q -c 50 -i 0.02 10.200.4.2 | awk -F/ '/^rtt/ {print $5}')
    ip netns exec "$(ns out)" python3 "$DIR/recv.py" &
    local recv=$!
    local cpu0 cpu1 secs
    cpu0=$(cpu_ticks $SSHR_PID)
    secs=$(in_ns lab timeout 150 python3 "$DIR/send.py" "$MIB")
    cpu1=$(cpu_ticks $SSHR_PID)
    kill $recv 2>/dev/null || true
    wait $recv 2>/dev/null || true
    kill $client 2>/dev/null || true
    wait $client 2>/dev/null || true
    # Wait for the path to go away before the next run reuses tun0.
    for _ in $(seq 100); do
        in_ns srv ip link show tun0 >/dev/null 2>&1 || break
        sleep 0.05
    done
    local cpu="-"
    [ "$1" = sshr ] && cpu=$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')
    awk -v s="$secs" -v m="$MIB" -v su=$(((t1 - t0) / 1000000)) -v r="$rtt" -v c="$cpu" \
        'BEGIN {printf "%d %.3f %.1f %s\n", su, r, m * 1.048576 * 8 / s, c}'
}

declare -A SETUP RTT MBPS CPU
for run in $(seq "$RUNS"); do
    for path in direct sshr; do
        read -r s r m c < <(measure $path)
        SETUP[$path]+="$s "; RTT[$path]+="$r "; MBPS[$path]+="$m "; CPU[$path]+="$c "
    done
done

median() { # printf format; values on stdin ("-": not measured)
    tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk -v f="$1\n" '{a[NR]=$1}
        END {if (NR == 0) print "-"; else printf f, (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}

echo
echo "ssh -w point-to-point, lab host -> outside host through the tunnel; $MIB MiB per transfer,"
echo "median of $RUNS runs; client: OpenSSH $(ssh -V 2>&1 | sed 's/OpenSSH_\([^,]*\).*/\1/'), -c $CIPHER, $KEX; $(nproc) cores."
echo
echo "| path | tunnel up (ms) | ping RTT avg (ms) | TCP throughput (Mbit/s) | sshr CPU (s) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for path in direct sshr; do
    label=$([ $path = direct ] && echo "direct \`ssh -w\`" || echo "through sshr")
    echo "| $label | $(echo "${SETUP[$path]}" | median %.0f) | $(echo "${RTT[$path]}" | median %.3f) | $(echo "${MBPS[$path]}" | median %.0f) | $(echo "${CPU[$path]}" | median %.2f) |"
done
echo
echo "each run, Mbit/s: direct ${MBPS[direct]}; through sshr ${MBPS[sshr]}"
