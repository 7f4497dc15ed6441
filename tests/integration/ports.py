"""Ports for test listeners.

A port is chosen below the kernel's ephemeral range (ip_local_port_range), so
no outgoing connection (a client, a peer, the daemon's own relay) can be
given it as a source port between the check here and the daemon's bind.
Each port is handed out once per test run.
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


def free_port(ips=("127.0.0.1",), udp=False):
    """A TCP port (and UDP too if udp) that is free on every address in ips."""
    high = min(_ephemeral_low(), 65536)
    low = 10000 if high > 12000 else 1024
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    for _ in range(500):
        port = rng.randrange(low, high)
        if port in _given:
            continue
        if all(_bindable(ip, port, socket.SOCK_STREAM) for ip in ips) and \
                (not udp or all(_bindable(ip, port, socket.SOCK_DGRAM) for ip in ips)):
            _given.add(port)
            return port
    raise RuntimeError("no free port in %d-%d on %s" % (low, high, ", ".join(ips)))
