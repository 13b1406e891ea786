"""Who listens on a TCP port, from /proc (Linux): so a stack refuses ports another process holds, and
checks that what answers on a port is its own child and not another stack's server.

`listeners(port)` reads the LISTEN sockets of /proc/net/tcp and tcp6 and finds the processes holding
them through /proc/<pid>/fd; a process of another user is not visible (its pid is not found).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LISTEN_STATE = "0A"
MAX_CMDLINE_CHARS = 200
PROC = Path("/proc")


def _listening_inodes(port: int) -> set[int]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == LISTEN_STATE and int(local.rsplit(":", 1)[1], 16) == port and inode:
                inodes.add(inode)
    return inodes


def listeners(port: int) -> tuple[set[int], bool]:
    """(pids holding a listening socket on `port`, whether anything listens there at all)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return set(), False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    pids.add(int(entry.name))
                    break
            except OSError:
                continue
    return pids, True


def process_group(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])  # state, ppid, pgrp


def describe(pid: int) -> str:
    """`pid N: <command line>`, for messages that name a process."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(a.decode("utf-8", "replace") for a in argv if a)
    return f"pid {pid}: {command[:MAX_CMDLINE_CHARS]}"


def holder(port: int) -> str:
    """Who holds `port`, in words."""
    pids, listening = listeners(port)
    if pids:
        return "; ".join(describe(p) for p in sorted(pids))
    if listening:
        return "a process this user cannot see"
    return "a socket that is not listening (in use, or just closed)"


def is_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now (SO_REUSEADDR, as servers bind: TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def foreign_holder(port: int, group: int) -> str | None:
    """None while `port` is not listened on, or listened on by the process group `group` (a child the
    supervisor started in its own session, with its children); else who holds it, in words."""
    pids, listening = listeners(port)
    if not listening or any(process_group(p) == group for p in pids):
        return None
    return holder(port)
