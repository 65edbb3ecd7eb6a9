"""Host names the server answers to: the check against DNS rebinding, shared by the server and the CLI.

A page on a hostile domain whose name resolves to this machine (DNS rebinding) reaches the server
with that domain in its Host header; only the names in the allow-list are served.
"""

from __future__ import annotations

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(value: str) -> str:
    """The host part of a Host header or host name, lower case, without port or IPv6 brackets."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return v.split(":", 1)[0]
    return v
