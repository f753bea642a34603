"""What the Python bench scripts share: a free loopback port, and a release `sluice run` in
front of one loopback origin, started and stopped by its PID."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile

SLUICE = os.environ.get("SLUICE_BIN", "target/release/sluice")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def sluice(origin_port, extra=""):
    """Yields the port of a `sluice run` whose default pool is 127.0.0.1:`origin_port`, access
    log off, `extra` TOML appended; ready when yielded (bounded wait), stopped on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "sluice.toml")
        with open(config, "w") as f:
            f.write(
                f'[[listener]]\naddress = "127.0.0.1:{port}"\n\n'
                f'[[pool]]\nname = "origin"\nendpoints = [{{ address = "127.0.0.1:{origin_port}" }}]\n\n'
                '[proxy]\ndefault_pool = "origin"\n\n[log]\naccess_log = false\n\n' + extra
            )
        proxy = subprocess.Popen(
            [SLUICE, "run", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{SLUICE} did not start listening")
            yield port
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(timeout=30)
