"""Publish one message with Node.js amqplib, a foreign AMQP client: ``python amqplib.py URL
QUEUE CONTENT_TYPE < body``.

amqplib is installed from npm on first use into a folder under the system's temporary
directory (kept for later runs; a lock keeps concurrent first uses from racing). Exits 0 once
the broker confirmed the message; otherwise prints why and exits non-zero.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

AMQPLIB = "amqplib@0.10"
HERE = Path(__file__).resolve().parent


def installed() -> Path:
    """The folder holding node_modules/amqplib, installed there if it is not yet."""
    folder = Path(tempfile.gettempdir()) / f"balog-tests-{AMQPLIB.replace('@', '-')}"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "node_modules" / "amqplib" / "package.json").exists():
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit("npm is not installed")
            subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                    "--prefix",
                    str(folder),
                    AMQPLIB,
                ],
                check=True,
                timeout=300,
            )
    return folder


def main() -> None:
    url, queue, content_type = sys.argv[1:4]
    folder = installed()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed")
    done = subprocess.run(
        [node, str(HERE / "producer.js"), url, queue, content_type],
        stdin=sys.stdin.buffer,
        env={**os.environ, "NODE_PATH": str(folder / "node_modules")},
        timeout=60,
        check=False,
    )
    raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
