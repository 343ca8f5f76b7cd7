"""A front door to ComfyUI open to the network: an nginx server that proxies to a ComfyUI instance and
listens beyond loopback, without TLS or without asking for credentials (ComfyUI itself asks for none).

Which servers are front doors: those with a location that proxies to a port a ComfyUI container is
published on (Docker's port bindings). Facts: gpuhost.facts.nginx reads nginx's configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuhost.comfyui.container import looks_like_comfyui
from gpuhost.facts.source import SourceStatus
from gpuhost.model import Finding, Severity

if TYPE_CHECKING:
    from gpuhost.facts.nginx import NginxServer
    from gpuhost.hostfacts import HostFacts
    from gpuhost.rules.options import RuleOptions

AREA = "door"
TLS_REMEDY = ("Serve it over TLS (roles/comfyui_door does unless comfyui_door_tls: false, which it allows on "
              "loopback only), or listen on 127.0.0.1 and reach it through an SSH tunnel or a tailnet.")
AUTH_REMEDY = ("Ask for credentials on every path that reaches ComfyUI (roles/comfyui_door: comfyui_door_token "
               "and/or comfyui_door_users); remove `auth_basic off` from those locations.")


def comfyui_ports(facts: HostFacts) -> set[int]:
    """The host ports ComfyUI containers are published on."""
    ports: set[int] = set()
    for container in facts.docker.containers:
        if not looks_like_comfyui(container.image, container.labels):
            continue
        for bindings in container.ports.values():
            for binding in bindings:
                port = str(binding.get("HostPort") or "")
                if port.isdigit():
                    ports.add(int(port))
    return ports


def _proxies_to_comfyui(server: NginxServer, ports: set[int]) -> list[str]:
    """The locations of a server that reach ComfyUI."""
    return [location.path for location in server.locations
            if any(target.rsplit(":", 1)[-1].isdigit() and int(target.rsplit(":", 1)[-1]) in ports
                   for target in location.proxies)]


def exposure(facts: HostFacts, options: RuleOptions) -> list[Finding]:
    nginx = facts.nginx
    if nginx.status is SourceStatus.UNREADABLE:
        return [Finding("door.tls", AREA, Severity.WARN, f"cannot read nginx's configuration: {nginx.error}",
                        "Fix the file named (nginx -t says the same), then check again.",
                        {"config": nginx.config, "error": nginx.error})]
    ports = comfyui_ports(facts)
    findings = []
    for server in nginx.servers:
        paths = _proxies_to_comfyui(server, ports)
        if not paths:
            continue
        where = f"{server.file}:{server.line}"
        exposed = [listen for listen in server.listens if not listen.loopback]
        evidence = {"server": where, "listens": [{"address": x.address, "ssl": x.ssl, "loopback": x.loopback}
                                                 for x in server.listens], "comfyui_paths": paths}
        if not exposed:
            findings.append(Finding("door.tls", AREA, Severity.OK,
                                    f"the ComfyUI front door {where} listens on loopback only", "", evidence))
            continue
        plain = [listen.address for listen in exposed if not listen.ssl]
        if plain:
            findings.append(Finding(
                "door.tls", AREA, Severity.FAIL,
                f"the ComfyUI front door {where} listens on {', '.join(plain)} (beyond loopback) without TLS: "
                "passwords, tokens, prompts and images cross the network in clear text", TLS_REMEDY, evidence))
        else:
            findings.append(Finding("door.tls", AREA, Severity.OK,
                                    f"the ComfyUI front door {where} listens beyond loopback over TLS", "", evidence))
        open_paths = [location.path for location in server.locations if location.path in paths and not location.auth]
        if open_paths:
            findings.append(Finding(
                "door.auth", AREA, Severity.FAIL,
                f"the ComfyUI front door {where} listens beyond loopback and answers {', '.join(open_paths)} without "
                "credentials: anyone who reaches it can queue prompts, upload files and read every output",
                AUTH_REMEDY, {**evidence, "open_paths": open_paths}))
        else:
            findings.append(Finding("door.auth", AREA, Severity.OK,
                                    f"the ComfyUI front door {where} asks for credentials on every ComfyUI path", "",
                                    evidence))
    return findings
