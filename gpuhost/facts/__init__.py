"""Collectors, one per source (kernel, gpu, devices, docker, toolkit, cdi, storage): plain dataclasses
that take a root path, so a captured tree replays like the host it came from."""
