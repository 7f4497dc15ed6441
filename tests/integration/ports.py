"""Ports for test listeners.

A port is chosen below the kernel's ephemeral range (ip_local_port_range), so
no outgoing connection (a client, a peer, the daemon's own relay) can be
given it as a source port between the check here and the daemon's bind.
Each port is handed out once per test run. Under pytest-xdist, worker k of n
takes only ports p with p % n == k: two workers never pick the same port between
the check and the bind.
"""

import os
import random
import socket

_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(ip, port, kind):
    s = socket.socket(socket.AF_INET, kind)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _worker():
    """(k, n): this is pytest-xdist worker k of n, or (0, 1) when run alone."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        return int(name.lstrip("gw")), max(1, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    except (KeyError, ValueError):
        return 0, 1


def free_port(ips=("127.0.0.1",), udp=False):
    """A TCP port (and UDP too if udp) that is free on every address in ips."""
    high = min(_ephemeral_low(), 65536)
    low = 10000 if high > 12000 else 1024
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    worker, workers = _worker()
    for _ in range(500):
        port = rng.randrange(low, high)
        port -= port % workers - worker
        if port < low or port >= high or port in _given:
            continue
        if all(_bindable(ip, port, socket.SOCK_STREAM) for ip in ips) and \
                (not udp or all(_bindable(ip, port, socket.SOCK_DGRAM) for ip in ips)):
            _given.add(port)
            return port
    raise RuntimeError("no free port in %d-%d on %s" % (low, high, ", ".join(ips)))
