"""An asyncssh SSH client for sshr's tests: runs one command with exec, copies its own
stdin to the command's stdin, the command's stdout and stderr to its own, and exits
with the command's exit status (255 and one line on stderr when it cannot log in).

    asyncssh_client.py --port P --user U --known-hosts FILE
                       (--key FILE | --password | --kbdint) COMMAND

--password and --kbdint take the password from the environment variable
SSHR_PEER_PASSWORD. The server's host key must be in FILE (OpenSSH known_hosts
format): any other key is refused.
"""

import argparse
import asyncio
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import asyncssh  # noqa: E402


class Client(asyncssh.SSHClient):
    def __init__(self, password):
        self.password = password

    def password_auth_requested(self):
        return self.password

    def kbdint_auth_requested(self):
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        return [self.password] * len(prompts)


async def run(args):
    password = os.environ.get("SSHR_PEER_PASSWORD")
    options = dict(
        port=args.port,
        username=args.user,
        known_hosts=args.known_hosts,
        agent_path=None,
        login_timeout=60,
        client_keys=[args.key] if args.key else None,
        password=password if args.password else None,
        kbdint_auth=args.kbdint,
        password_auth=args.password,
        public_key_auth=bool(args.key),
    )
    if args.kbdint:
        options["client_factory"] = lambda: Client(password)
    async with asyncssh.connect("127.0.0.1", **options) as conn:
        process = await conn.create_process(args.command, encoding=None)
        loop = asyncio.get_running_loop()

        async def feed():
            # Read in a thread: stdin may be a file or /dev/null, which epoll refuses.
            try:
                while True:
                    data = await loop.run_in_executor(None, os.read, 0, 65536)
                    if not data:
                        break
                    process.stdin.write(data)
                    await process.stdin.drain()
                process.stdin.write_eof()
            except (OSError, asyncssh.Error):
                pass

        async def drain(reader, sink):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                sink.write(data)
            sink.flush()

        feeding = asyncio.ensure_future(feed())
        await asyncio.gather(
            drain(process.stdout, sys.stdout.buffer),
            drain(process.stderr, sys.stderr.buffer),
        )
        result = await process.wait(check=False)
        feeding.cancel()
        return result.exit_status if result.exit_status is not None else 255


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
    try:
        status = asyncio.run(run(args))
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as e:
        print("asyncssh: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(255)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: asyncio.run would wait for the thread still blocked reading stdin.
    os._exit(status)


if __name__ == "__main__":
    main()
