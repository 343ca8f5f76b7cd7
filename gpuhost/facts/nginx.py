"""nginx's configuration as the rules need it: each server's listening addresses (TLS or not), its
locations, where each proxies to (upstreams and map variables resolved) and whether each asks for
credentials. Read from /etc/nginx/nginx.conf under a root, following `include` (globs, relative to
/etc/nginx), never executed.

The reader is nginx's own syntax: directives end in `;`, blocks in `{ }`, `#` comments, '...' and "..."
quotes with backslash escapes. A file that cannot be read or parsed is an error in the facts, not a crash.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Optional

from gpuhost import userfile
from gpuhost.facts.source import SourceStatus

NGINX_CONF = "/etc/nginx/nginx.conf"
NGINX_PREFIX = "/etc/nginx"
MAX_FILES = 256
MAX_FILE_BYTES = 4 * userfile.MIB
MAX_DEPTH = 32
# nginx reads a location without auth_basic or auth_request as open, and `auth_basic off` as open
AUTH_DIRECTIVES = ("auth_basic", "auth_request", "auth_jwt")


class NginxSyntaxError(ValueError):
    pass


@dataclass
class Directive:
    name: str
    args: list[str]
    block: Optional[list[Directive]]
    file: str
    line: int


@dataclass
class Listen:
    address: str  # as written ("127.0.0.1:8443", "8443", "[::]:443", "unix:/run/x.sock")
    host: str  # the address part ("0.0.0.0" when only a port is given)
    port: int
    ssl: bool
    loopback: bool
    unix: bool = False


@dataclass
class Location:
    path: str
    proxies: list[str] = field(default_factory=list)  # host:port of every server it may proxy to; "?" unknown
    auth: bool = False


@dataclass
class NginxServer:
    file: str
    line: int
    listens: list[Listen] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)


@dataclass
class NginxFacts:
    status: SourceStatus = SourceStatus.ABSENT
    config: str = NGINX_CONF
    error: str = ""
    files: list[str] = field(default_factory=list)
    servers: list[NginxServer] = field(default_factory=list)


_TOKEN = re.compile(r"""\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|((?:[^\s{};"'\\]|\\.)+)""", re.S)


def tokens(text: str, where: str) -> list[tuple[str, bool, int]]:
    """(token, quoted, line) of a configuration text."""
    found: list[tuple[str, bool, int]] = []
    position, line = 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise NginxSyntaxError(f"{where}:{line}: cannot read {text[position:position + 20]!r}")
        piece = match.group(0)
        if match.group(1) is not None or match.group(2) is not None:
            raw = match.group(1) if match.group(1) is not None else match.group(2)
            found.append((re.sub(r"\\(.)", r"\1", raw, flags=re.S), True, line))
        elif match.group(3) is not None:
            found.append((match.group(3), False, line))
        elif match.group(4) is not None:
            found.append((match.group(4), False, line))
        line += piece.count("\n")
        position = match.end()
    return found


def parse(text: str, where: str) -> list[Directive]:
    """The directives of one file (includes not followed)."""
    stream = tokens(text, where)
    position = 0

    def block(depth: int) -> list[Directive]:
        nonlocal position
        if depth > MAX_DEPTH:
            raise NginxSyntaxError(f"{where}: blocks nested deeper than {MAX_DEPTH}")
        out: list[Directive] = []
        words: list[str] = []
        line = 0
        while position < len(stream):
            token, quoted, at = stream[position]
            position += 1
            if not quoted and token == ";":
                if not words:
                    raise NginxSyntaxError(f"{where}:{at}: unexpected `;`")
                out.append(Directive(words[0], words[1:], None, where, line))
                words = []
            elif not quoted and token == "{":
                if not words:
                    raise NginxSyntaxError(f"{where}:{at}: a block without a name")
                name, args, start = words[0], words[1:], line
                words = []
                out.append(Directive(name, args, block(depth + 1), where, start))
            elif not quoted and token == "}":
                if depth == 0 or words:
                    raise NginxSyntaxError(f"{where}:{at}: unexpected `}}`")
                return out
            else:
                if not words:
                    line = at
                words.append(token)
        if depth or words:
            raise NginxSyntaxError(f"{where}: unexpected end of file")
        return out

    return block(0)


class _Reader:
    def __init__(self, root: str, prefix: str) -> None:
        self.root, self.prefix = root, prefix
        self.files: list[str] = []

    def host_path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def load(self, path: str, depth: int = 0) -> list[Directive]:
        if len(self.files) >= MAX_FILES:
            raise NginxSyntaxError(f"more than {MAX_FILES} configuration files")
        self.files.append(path)
        text = userfile.read_text(self.host_path(path), "nginx configuration", MAX_FILE_BYTES, errors="replace")
        return self.expand(parse(text, path), depth)

    def expand(self, directives: list[Directive], depth: int) -> list[Directive]:
        out: list[Directive] = []
        for directive in directives:
            if directive.name == "include" and directive.block is None and directive.args:
                if depth >= MAX_DEPTH:
                    raise NginxSyntaxError(f"{directive.file}:{directive.line}: includes nested too deep")
                pattern = directive.args[0]
                pattern = pattern if pattern.startswith("/") else os.path.join(self.prefix, pattern)
                matches = sorted(glob.glob(self.host_path(pattern))) if glob.has_magic(pattern) else [
                    self.host_path(pattern)]
                for match in matches:
                    host_relative = "/" + os.path.relpath(match, self.root) if self.root != "/" else match
                    out.extend(self.load(host_relative, depth + 1))
            else:
                if directive.block is not None:
                    directive.block = self.expand(directive.block, depth)
                out.append(directive)
        return out


def _listen(args: list[str]) -> Listen:
    address = args[0] if args else "80"
    flags = args[1:]
    ssl = "ssl" in flags or "quic" in flags
    if address.startswith("unix:"):
        return Listen(address, address, 0, ssl, True, unix=True)
    host, port_text = "0.0.0.0", address
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest.lstrip(":") or "80"
    elif ":" in address:
        host, _, port_text = address.rpartition(":")
    elif not address.isdigit():
        host, port_text = address, "80"
    port = int(port_text) if port_text.isdigit() else 0
    host = "0.0.0.0" if host == "*" else host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return Listen(address, host, port, ssl, loopback)


def _auth(directives: list[Directive], inherited: bool) -> bool:
    """Whether a level asks for credentials: its own auth_* directives decide, else what it inherits."""
    for directive in directives:
        if directive.name in AUTH_DIRECTIVES and directive.args:
            return directive.args[0] != "off"
    return inherited


def _targets(target: str, upstreams: dict[str, list[str]], maps: dict[str, list[str]]) -> list[str]:
    """host:port addresses a proxy_pass URL may reach; "?" for what cannot be told."""
    rest = re.sub(r"^[a-z]+://", "", target)
    host = re.split(r"[/?]", rest, maxsplit=1)[0]
    names = [host]
    if host.startswith("$"):
        names = maps.get(host[1:], ["?"])
    found: list[str] = []
    for name in names:
        if name in upstreams:
            found.extend(upstreams[name])
        elif name == "?" or "$" in name:
            found.append("?")
        else:
            found.append(name if re.search(r":\d+$", name) else f"{name}:80")
    return found


def _locations(directives: list[Directive], inherited_auth: bool, upstreams: dict[str, list[str]],
               maps: dict[str, list[str]], prefix: str = "") -> list[Location]:
    out: list[Location] = []
    for directive in directives:
        if directive.name != "location" or directive.block is None:
            continue
        path = prefix + " ".join(directive.args)
        auth = _auth(directive.block, inherited_auth)
        proxies = [t for d in directive.block if d.name == "proxy_pass" and d.args
                   for t in _targets(d.args[0], upstreams, maps)]
        out.append(Location(path, list(dict.fromkeys(proxies)), auth))
        out.extend(_locations(directive.block, auth, upstreams, maps, path + " > "))
    return out


def servers_of(directives: list[Directive]) -> list[NginxServer]:
    found: list[NginxServer] = []
    for http in (d for d in directives if d.name == "http" and d.block is not None):
        block = http.block or []
        upstreams: dict[str, list[str]] = {}
        maps: dict[str, list[str]] = {}
        for directive in block:
            if directive.name == "upstream" and directive.args and directive.block is not None:
                upstreams[directive.args[0]] = [d.args[0] for d in directive.block if d.name == "server" and d.args]
            if directive.name == "map" and len(directive.args) == 2 and directive.block is not None:
                maps[directive.args[1].lstrip("$")] = [d.args[0] for d in directive.block if d.args]
        http_auth = _auth(block, False)
        for server in (d for d in block if d.name == "server" and d.block is not None):
            body = server.block or []
            listens = [_listen(d.args) for d in body if d.name == "listen"] or [_listen(["80"])]
            if any(d.name == "ssl" and d.args == ["on"] for d in body):
                for item in listens:
                    item.ssl = True
            auth = _auth(body, http_auth)
            locations = _locations(body, auth, upstreams, maps)
            server_proxy = [t for d in body if d.name == "proxy_pass" and d.args
                            for t in _targets(d.args[0], upstreams, maps)]
            if server_proxy:
                locations.insert(0, Location("(server)", list(dict.fromkeys(server_proxy)), auth))
            found.append(NginxServer(server.file, server.line, listens, locations))
    return found


def collect_nginx(root: str = "/", config: str = NGINX_CONF, prefix: str = NGINX_PREFIX) -> NginxFacts:
    facts = NginxFacts(config=config)
    reader = _Reader(root, prefix)
    if not os.path.exists(reader.host_path(config)):
        return facts
    try:
        directives = reader.load(config)
    except (userfile.UserFileError, NginxSyntaxError, OSError) as exc:
        facts.status, facts.error, facts.files = SourceStatus.UNREADABLE, str(exc), reader.files
        return facts
    facts.status, facts.files, facts.servers = SourceStatus.OK, reader.files, servers_of(directives)
    return facts
