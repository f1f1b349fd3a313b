"""An asyncssh SSH server for sshr's tests, on 127.0.0.1: exec runs the command with
/bin/sh as a local account, its stdin, stdout, stderr and exit status relayed; the
sftp subsystem is asyncssh's own SFTP server, confined to the account's home.

    asyncssh_server.py --port P --host-key FILE --authorized-keys FILE --account NAME

The account is the only login: with a key of the authorized_keys file, or with the
password in the environment variable SSHR_PEER_PASSWORD (by password or by
keyboard-interactive). Logs go to stderr. Runs until killed.
"""

import argparse
import asyncio
import logging
import os
import pwd
import sys
import warnings

warnings.filterwarnings("ignore")
import asyncssh  # noqa: E402


def make_server(account, password):
    class Server(asyncssh.SSHServer):
        def begin_auth(self, username):
            return True

        def validate_public_key(self, username, key):
            # The authorized_client_keys option has checked the key already.
            return username == account

        def password_auth_supported(self):
            return True

        def validate_password(self, username, given):
            return username == account and given == password

        def kbdint_auth_supported(self):
            return True

        def get_kbdint_challenge(self, username, lang, submethods):
            return "", "", "", [("Password: ", False)]

        def validate_kbdint_response(self, username, responses):
            return username == account and list(responses) == [password]

    return Server


async def copy(reader, writer, close=False):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError, asyncssh.BreakReceived):
        pass
    finally:
        if close:
            writer.close()


def make_sftp(account):
    home = pwd.getpwnam(account).pw_dir.encode()

    class Sftp(asyncssh.SFTPServer):
        # Runs in this (root) process: confined to the account's home directory.
        def __init__(self, chan):
            super().__init__(chan, chroot=home)

    return Sftp


def make_handler(account):
    entry = pwd.getpwnam(account)

    async def handle(process):
        if process.command is None:
            process.stderr.write(b"this server runs commands only\n")
            process.exit(1)
            return
        child = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            process.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            cwd=entry.pw_dir,
            env={
                "HOME": entry.pw_dir,
                "USER": account,
                "LOGNAME": account,
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            },
        )
        feeding = asyncio.ensure_future(copy(process.stdin, child.stdin, True))
        await asyncio.gather(
            copy(child.stdout, process.stdout),
            copy(child.stderr, process.stderr),
        )
        status = await child.wait()
        feeding.cancel()
        process.exit(status if status >= 0 else 128 - status)

    return handle


async def serve(args):
    await asyncssh.create_server(
        make_server(args.account, os.environ["SSHR_PEER_PASSWORD"]),
        "127.0.0.1",
        args.port,
        server_host_keys=[args.host_key],
        authorized_client_keys=args.authorized_keys,
        process_factory=make_handler(args.account),
        encoding=None,
        sftp_factory=make_sftp(args.account),
        allow_scp=False,
    )
    print("listening on 127.0.0.1:%d" % args.port, file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host-key", required=True)
    ap.add_argument("--authorized-keys", required=True)
    ap.add_argument("--account", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
