"""The server's processes and what they leave on the machine: the port checked before anything is made, the
shared rate-limit file's place, and worker processes that exit with their parent.

`serve --workers N` runs a uvicorn supervisor and N worker processes. If the supervisor is killed (SIGKILL,
the OOM killer), nothing tells its workers: they would keep the port and serve on. So each worker asks the
kernel for SIGTERM when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`; elsewhere a thread watches the
parent's pid), and the rate-limit file has a fixed place per host and port, in a directory of the user's
own, so that a restart reuses it instead of leaving one more behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

from drawgap.errors import InputError

PR_SET_PDEATHSIG = 1


def check_port_free(host: str, port: int) -> None:
    """Refuse (InputError, exit 2) a host and port that another process listens on, before the server makes
    its database or anything else."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {host} is already in use (another server?): stop it or choose "
                                 "another --port", field="port") from None
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})", field="host") from None


def private_runtime_dir() -> Path:
    """`<tmp>/drawgap-clickme-<uid>`, made 0700; refused if it is a link or another user's (a shared /tmp)."""
    path = Path(tempfile.gettempdir()) / f"drawgap-clickme-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise InputError("expected a directory of this user's, readable by nobody else", path=path)
    return path


def rate_limit_path(host: str, port: int) -> Path:
    """Where `serve` on this host and port keeps its shared rate limits (rewritten at each start)."""
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return private_runtime_dir() / f"rate-limits-{safe_host}-{port}.bin"


def exit_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGTERM when `parent_pid` (its parent) dies; at once if it already has."""
    installed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            installed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            installed = False
    if not installed:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the request was made: nobody would signal us
        os.kill(os.getpid(), signal.SIGTERM)
