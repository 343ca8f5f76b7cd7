"""What Docker takes as the host address of a published port, for the comfyui role's checks.

Docker publishes a port on an IP literal only. community.docker.docker_container (what the role
uses) refuses a host name (`localhost`), an abbreviated IPv4 form (`127.1`) and an IPv6 address
without brackets (`::1:8188:8188` reads as five parts); the Engine API itself takes any of them and
silently publishes on every address (0.0.0.0 and ::). So the role checks the address up front, before
anything is pulled, and renders it the one way the module reads it: IPv6 in brackets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

NOT_AN_IP = "Docker publishes on an IP address only: write 127.0.0.1 or ::1 (loopback), or the address itself"


def read_bind_address(value: Any) -> dict[str, Any]:
    """{valid, ip, loopback, published, why} of a host address for a published port."""
    refused = {"valid": False, "ip": "", "loopback": False, "published": ""}
    if not isinstance(value, str) or not value:
        return {**refused, "why": f"{value!r} is not an address. {NOT_AN_IP}"}
    if value != value.strip() or any(ord(c) < 32 or c.isspace() for c in value):
        return {**refused, "why": f"{value!r} has spaces or control characters. {NOT_AN_IP}"}
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return {**refused, "why": f"{value!r} is not an IP address. {NOT_AN_IP}"}
    if ip.version == 4 and text != value:
        return {**refused, "why": f"{value!r}: brackets go around an IPv6 address only; write {text}"}
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return {**refused, "why": f"{value!r}: Docker takes no IPv6 zone (%{ip.scope_id})"}
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    loopback = ip.is_loopback or bool(mapped and mapped.is_loopback)
    published = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return {"valid": True, "ip": ip.compressed, "loopback": loopback, "published": published, "why": ""}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"comfyui_bind_address": read_bind_address}
