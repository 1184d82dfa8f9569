"""The anonymous caller's identity: its IP's /24 (IPv4) or /64 (IPv6).

The IP is API Gateway's ``sourceIp``; ``X-Forwarded-For`` is believed only for hops that come
from a configured trusted proxy (rightmost untrusted address wins).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from chalicelib.config import IPNetwork
from chalicelib.models import Caller

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(source_ip: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> IPAddress:
    ip = ipaddress.ip_address(source_ip)
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    while _trusted(ip, trusted) and hops:
        try:
            ip = ipaddress.ip_address(hops.pop())
        except ValueError:
            break
    return ip


def caller_of(source_ip: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> Caller:
    ip = client_ip(source_ip, forwarded_for, trusted)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return Caller(fingerprint=str(network), source_ip=str(ip))


def _trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip in net for net in trusted)
