"""A paramiko SSH client for sshr's tests: runs one command with exec, copies its own
stdin to the command's stdin, the command's stdout and stderr to its own, and exits
with the command's exit status (255 and one line on stderr when it cannot log in).

    paramiko_client.py --port P --user U --known-hosts FILE
                       (--key FILE | --password | --kbdint) COMMAND

--password and --kbdint take the password from the environment variable
SSHR_PEER_PASSWORD. The server's host key must be in FILE (OpenSSH known_hosts
format, "[127.0.0.1]:P key"): any other key is refused.
"""

import argparse
import os
import sys
import threading
import warnings

warnings.filterwarnings("ignore")
import paramiko  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--known-hosts", required=True)
    auth = ap.add_mutually_exclusive_group(required=True)
    auth.add_argument("--key")
    auth.add_argument("--password", action="store_true")
    auth.add_argument("--kbdint", action="store_true")
    ap.add_argument("command")
    args = ap.parse_args()

    transport = paramiko.Transport(("127.0.0.1", args.port))
    # Generous: the tests run many clients at once on a small machine.
    transport.banner_timeout = 60
    transport.auth_timeout = 60
    transport.start_client(timeout=60)
    key = transport.get_remote_server_key()
    known = paramiko.HostKeys(args.known_hosts)
    host = "[127.0.0.1]:%d" % args.port
    if not known.check(host, key):
        fail("host key %s of %s is not in %s" % (key.get_name(), host, args.known_hosts))

    if args.key:
        transport.auth_publickey(args.user, load_key(args.key))
    elif args.password:
        transport.auth_password(args.user, os.environ["SSHR_PEER_PASSWORD"])
    else:
        password = os.environ["SSHR_PEER_PASSWORD"]
        transport.auth_interactive(args.user, lambda title, instr, prompts: [password] * len(prompts))

    chan = transport.open_session(timeout=60)
    chan.exec_command(args.command)

    def feed():
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                chan.sendall(data)
            chan.shutdown_write()
        except OSError:
            pass

    def drain(recv, sink):
        while True:
            data = recv(65536)
            if not data:
                break
            sink.write(data)
        sink.flush()

    threading.Thread(target=feed, daemon=True).start()
    errors = threading.Thread(target=drain, args=(chan.recv_stderr, sys.stderr.buffer))
    errors.start()
    drain(chan.recv, sys.stdout.buffer)
    errors.join(30)
    status = chan.recv_exit_status()
    transport.close()
    sys.exit(status)


def load_key(path):
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
    fail("cannot read the key %s" % path)


def fail(message):
    print("paramiko: %s" % message, file=sys.stderr)
    sys.exit(255)


if __name__ == "__main__":
    try:
        main()
    except paramiko.SSHException as e:
        fail("%s: %s" % (type(e).__name__, e))
    except OSError as e:
        fail(e)
