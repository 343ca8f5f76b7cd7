"""The comfyui_door role's checks and what its nginx configuration is made of. Pure: the role calls them
before it changes anything. No message ever repeats a secret (the token, a password, the TLS key).

    {{ comfyui_door_bind_address | comfyui_door_listen(comfyui_door_port) }}   {valid, why, loopback, listen}
    {{ comfyui_door_instances | comfyui_door_upstreams }}                       {valid, why, instances: [...]}
    {{ comfyui_door_token | comfyui_door_secret_problems(comfyui_door_users) }} [problem, ...]
    {{ settings | comfyui_door_setting_problems }}                              [problem, ...]
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# RFC 6750's b64token: what a bearer token may hold, and nothing nginx would read as syntax ($, ", ;, {)
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
TOKEN_MIN, TOKEN_MAX = 16, 4096
USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
PASSWORD_MAX = 1024
# nginx's time and size forms (30, 30s, 5m, 1h; 100m, 8k, 1g)
TIME_RE = re.compile(r"[1-9][0-9]{0,5}(ms|s|m|h)?")
SIZE_RE = re.compile(r"[1-9][0-9]{0,9}[kKmMgG]?")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
NAME_RE = re.compile(rf"(\*\.)?{LABEL}(\.{LABEL})*")
MAX_INSTANCES = 64


def listen(address: Any, port: Any) -> dict[str, Any]:
    """{valid, why, loopback, listen}: nginx's `listen` address:port (IPv6 in brackets)."""
    refused = {"valid": False, "loopback": False, "listen": ""}
    if isinstance(port, bool) or not (isinstance(port, int) or (isinstance(port, str) and port.isdigit())):
        return {**refused, "why": f"comfyui_door_port {port!r} is not a port number"}
    if not 1 <= int(port) <= 65535:
        return {**refused, "why": f"comfyui_door_port {port} is outside 1 to 65535"}
    if not isinstance(address, str) or address != address.strip() or not address:
        return {**refused, "why": f"comfyui_door_bind_address {address!r} is not an IP address (no spaces)"}
    text = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return {**refused, "why": f"comfyui_door_bind_address {address!r} is not an IP address: write 127.0.0.1, ::1, "
                                  "0.0.0.0 or the address itself"}
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return {**refused, "why": f"comfyui_door_bind_address {address!r}: no IPv6 zone"}
    shown = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return {"valid": True, "why": "", "loopback": ip.is_loopback, "listen": f"{shown}:{int(port)}", "ip": ip.compressed}


def upstreams(instances: Any) -> dict[str, Any]:
    """The instances the door proxies to ({name, number, host_port, address} each, as the comfyui role's
    comfyui_deployed_instances has them): {valid, why, instances: [{number, name, server, pattern}]}.
    An instance published on every address (0.0.0.0, ::) is reached on loopback."""
    if not isinstance(instances, list) or not instances:
        return {"valid": False, "instances": [],
                "why": "comfyui_door_instances is empty: run the comfyui role first in the same play (it leaves "
                       "comfyui_deployed_instances), or list the instances ({name, number, host_port, address})"}
    if len(instances) > MAX_INSTANCES:
        return {"valid": False, "instances": [], "why": f"more than {MAX_INSTANCES} instances"}
    found, numbers = [], set()
    for item in instances:
        if not isinstance(item, dict):
            return {"valid": False, "instances": [], "why": f"the instance {item!r} is not a mapping"}
        number, port = item.get("number"), item.get("host_port")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 1000 or number in numbers:
            return {"valid": False, "instances": [],
                    "why": f"instance {item.get('name')!r}: its number {number!r} is not a whole number from 0 to 999 "
                           "of its own"}
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return {"valid": False, "instances": [],
                    "why": f"instance {item.get('name')!r}: host_port {port!r} is not a port number"}
        try:
            ip = ipaddress.ip_address(str(item.get("address") or "127.0.0.1"))
        except ValueError:
            return {"valid": False, "instances": [],
                    "why": f"instance {item.get('name')!r}: address {item.get('address')!r} is not an IP address"}
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        server = f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"
        numbers.add(number)
        found.append({"number": number, "name": str(item.get("name") or number), "server": server,
                      "pattern": re.escape(server)})
    return {"valid": True, "why": "", "instances": sorted(found, key=lambda i: i["number"])}


def secret_problems(token: Any, users: Any) -> list[str]:
    """What is wrong with the credentials, never quoting them."""
    problems = []
    if token is None:
        token = ""
    if not isinstance(token, str):
        problems.append("comfyui_door_token is not a string")
    elif token and not (TOKEN_MIN <= len(token) <= TOKEN_MAX and TOKEN_RE.fullmatch(token)):
        problems.append(f"comfyui_door_token must be {TOKEN_MIN} to {TOKEN_MAX} characters of A-Z a-z 0-9 . _ ~ + / - "
                        "(a bearer token, e.g. `openssl rand -hex 32`), with `=` only at its end and no spaces; "
                        f"the one given has {len(token)} characters")
    if users is None:
        users = []
    if not isinstance(users, list):
        problems.append("comfyui_door_users is a list of {name, password}")
        users = []
    seen = set()
    for position, user in enumerate(users, 1):
        if not isinstance(user, dict) or set(user) != {"name", "password"}:
            problems.append(f"comfyui_door_users entry {position} is not exactly {{name, password}}")
            continue
        name, password = user["name"], user["password"]
        if not isinstance(name, str) or not USER_RE.fullmatch(name):
            problems.append(f"comfyui_door_users entry {position}: the name must be 1 to 64 characters of "
                            "A-Z a-z 0-9 . _ @ - (no `:`, no spaces)")
        elif name in seen:
            problems.append(f"comfyui_door_users: {name} is listed twice")
        else:
            seen.add(name)
        if not isinstance(password, str) or not password:
            problems.append(f"comfyui_door_users entry {position}: the password is empty or not a string")
        elif len(password) > PASSWORD_MAX or any(ord(c) < 32 or ord(c) == 127 for c in password):
            problems.append(f"comfyui_door_users entry {position}: the password is longer than {PASSWORD_MAX} "
                            "characters or holds a control character")
    if not problems and not (isinstance(token, str) and token) and not users:
        problems.append("the door needs credentials: set comfyui_door_token (API clients: `Authorization: Bearer "
                        "TOKEN`) and/or comfyui_door_users (browsers and API clients: a name and a password)")
    return problems


def setting_problems(settings: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("header_timeout", "body_timeout", "read_timeout", "health_interval"):
        value = settings.get(name)
        if not isinstance(value, str) or not TIME_RE.fullmatch(value):
            problems.append(f"comfyui_door_{name} {value!r} is not a duration (30, 30s, 5m, 1h)")
    for name in ("max_upload", "header_buffer"):
        value = settings.get(name)
        if not isinstance(value, str) or not SIZE_RE.fullmatch(value):
            problems.append(f"comfyui_door_{name} {value!r} is not a size (8k, 100m, 1g)")
    names = settings.get("tls_names")
    if not isinstance(names, list) or not names:
        problems.append("comfyui_door_tls_names is a non-empty list of host names and IP addresses")
    else:
        for name in names:
            if not isinstance(name, str) or not (_is_ip(name) or NAME_RE.fullmatch(name)) or len(name) > 253:
                problems.append(f"comfyui_door_tls_names: {name!r} is neither a host name nor an IP address")
    for name in ("state_dir", "secrets_dir", "config_dir", "log_dir", "unit_dir"):
        value = settings.get(name)
        if (not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/")
                or re.search(r"[\s;{}\"'$\\]", value)):
            problems.append(f"comfyui_door_{name} {value!r} is not an absolute path without `..`, spaces, quotes, `;`, "
                            "`{`, `}`, `$` or `\\`")
    return problems


def token_pattern(token: str) -> str:
    """The token as a regular expression matching only itself: its `.` and `+` in brackets (no backslash,
    which nginx's quoted strings would read), the rest literal in PCRE already."""
    if not TOKEN_RE.fullmatch(token):
        raise ValueError("not a bearer token")
    return "".join(f"[{c}]" if c in ".+" else c for c in token)


def san(names: list[str]) -> str:
    """subjectAltName for openssl: DNS:... and IP:... entries."""
    return ",".join(("IP:" if _is_ip(name) else "DNS:") + name for name in dict.fromkeys(names))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "comfyui_door_listen": listen,
            "comfyui_door_upstreams": upstreams,
            "comfyui_door_secret_problems": secret_problems,
            "comfyui_door_setting_problems": setting_problems,
            "comfyui_door_san": san,
            "comfyui_door_token_pattern": token_pattern,
        }
