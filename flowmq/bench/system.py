"""What the tool needs from the operating system: enough file descriptors
for 10,000 connections, and the resident memory and CPU time of a server
process."""

from __future__ import annotations

import os


def raise_fd_limit() -> tuple:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it).
    Returns (soft, hard) as they are afterwards; (None, None) where there is
    no ``resource`` module."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return (None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1048576
    if soft == resource.RLIM_INFINITY or soft >= target:
        return (soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return (soft, hard)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_bytes(pid: int):
    """VmRSS of process ``pid`` from /proc/<pid>/status, in bytes (None if unknown)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    value, unit = line.split()[1:3]
                    return int(value) * {"kB": 1024, "mB": 1024 ** 2, "gB": 1024 ** 3}.get(unit, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int):
    """User plus system CPU seconds of process ``pid`` (all its threads) from
    /proc/<pid>/stat (None if unknown)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
