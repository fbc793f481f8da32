"""Outbound URLs: normalised comparison of endpoints, and the operator's host allow-list.

Pure string maths (no DNS, no I/O). Two uses:

- :func:`same_endpoint` — does a task's model URL name the endpoint the operator's default key
  belongs to? Compared on the normalised URL: scheme and host (case-insensitive), port (default
  80/443 filled in) and path, where the task's path must start with the default's path,
  segment by segment (``/v1`` covers ``/v1/`` and ``/v1/x``, never ``/v1beta``). Anything
  unusual — user info, a query or fragment, dot segments, percent-encoded dots or slashes —
  makes the answer "no": a wrong "no" only withholds a key, a wrong "yes" would leak it.
- :func:`host_allowed` — is a URL's host on the allow-list? Patterns are a host name
  (``api.openai.com``), a wildcard for subdomains (``*.svc.cluster.local``, not the domain
  itself), an IP address or a CIDR block (``10.0.0.0/8``, ``fd00::/8``), each optionally with
  ``:port``. An empty list allows everything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Endpoint:
    """A URL cut into the parts that identify an endpoint."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]
    plain: bool  # no user info, query, fragment, dot segments or encoded separators


def parse(url: str) -> Endpoint | None:
    """The normalised parts of an http(s) URL, or None if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    segments = tuple(s for s in parts.path.split("/") if s)
    lowered = parts.path.lower()
    plain = not (
        parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or any(s in (".", "..") for s in segments)
        or "%2e" in lowered
        or "%2f" in lowered
        or "%5c" in lowered
        or "\\" in parts.path
    )
    return Endpoint(scheme, host.lower(), port or DEFAULT_PORTS[scheme], segments, plain)


def same_endpoint(url: str, default: str) -> bool:
    """Whether ``url`` is the endpoint ``default`` (same origin, path at or below its path)."""
    a, b = parse(url), parse(default)
    if a is None or b is None or not a.plain:
        return False
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port) and (
        a.segments[: len(b.segments)] == b.segments
    )


def redact(url: str) -> str:
    """``url`` without user info (for status and messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _split_pattern(pattern: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a CIDR → (host part, port or None)."""
    p = pattern.strip().lower()
    if p.startswith("["):
        host, _, rest = p[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if p.count(":") == 1:
        host, _, port = p.partition(":")
        if port.isdigit():
            return host, int(port)
    return p, None


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == pattern.rstrip(".")
    try:
        return ip in ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return False


def host_allowed(url: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``url``'s host (and port) matches one of ``patterns``; () allows everything."""
    if not patterns:
        return True
    ep = parse(url)
    if ep is None:
        return False
    for pattern in patterns:
        host, port = _split_pattern(pattern)
        if (port is None or port == ep.port) and _host_matches(ep.host, host):
            return True
    return False


def valid_pattern(pattern: str) -> bool:
    """Whether an allow-list entry is well formed (checked when the operator starts)."""
    host, _ = _split_pattern(pattern)
    if not host or ("/" in host and not _is_network(host)):
        return False
    bare = host[2:] if host.startswith("*.") else host
    return bool(bare) and "*" not in bare and "@" not in bare


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
