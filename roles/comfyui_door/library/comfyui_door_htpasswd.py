#!/usr/bin/python
"""The front door's users file: `name:hash` lines nginx's auth_basic reads, each hash SHA-512-crypt ($6$).

A user whose line already holds a hash of the password given keeps it (a second run changes nothing);
a new user, or a changed password, gets a new hash with a random salt. Users not listed go. The file is
replaced whole (a temporary file in the same directory, renamed). Passwords come as module arguments
(Ansible hands them over in a file, not on a command line) and are never returned or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: comfyui_door_htpasswd
short_description: Write nginx's auth_basic users file with SHA-512-crypt hashes
description:
  - Writes C(name:hash) lines, keeping a user's hash when it matches the password given. Supports check mode.
options:
  path:
    description: The users file.
    type: path
    required: true
  users:
    description: The users, each C({name, password}).
    type: list
    elements: dict
    required: true
  owner:
    description: The file's owner.
    type: str
    default: root
  group:
    description: The file's group (the one nginx's workers run as).
    type: str
    required: true
  mode:
    description: The file's mode.
    type: str
    default: "0640"
author: gpuhost maintainers
"""

EXAMPLES = r"""
- name: Write the users file
  comfyui_door_htpasswd:
    path: /etc/nginx/gpuhost/comfyui-door.htpasswd
    users: [{name: alice, password: "{{ vault_alice_password }}"}]
    group: www-data
  no_log: true
"""

RETURN = r"""
users:
  description: The names in the file, in order.
  type: list
  returned: always
"""

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT = 5000
# the order in which SHA-512-crypt encodes the final digest's bytes, three at a time
ORDER = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48), (28, 49, 7),
         (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
         (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41))


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _b64(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = ""
    for _ in range(count):
        out += ITOA64[word & 0x3F]
        word >>= 6
    return out


def sha512_crypt(password: str, salt: str, rounds: int | None = None) -> str:
    """glibc's crypt(3) with `$6$` (Ulrich Drepper's SHA-crypt specification)."""
    key, salt_bytes = password.encode(), salt[:16].encode()
    count = ROUNDS_DEFAULT if rounds is None else max(1000, min(999_999_999, rounds))
    alternate = hashlib.sha512(key + salt_bytes + key).digest()
    a = hashlib.sha512(key + salt_bytes + _repeat(alternate, len(key)))
    length = len(key)
    while length:
        a.update(alternate if length & 1 else key)
        length >>= 1
    digest = a.digest()
    p_bytes = _repeat(hashlib.sha512(key * len(key)).digest(), len(key))
    s_bytes = _repeat(hashlib.sha512(salt_bytes * (16 + digest[0])).digest(), len(salt_bytes))
    for step in range(count):
        h = hashlib.sha512(p_bytes if step & 1 else digest)
        if step % 3:
            h.update(s_bytes)
        if step % 7:
            h.update(p_bytes)
        h.update(digest if step & 1 else p_bytes)
        digest = h.digest()
    encoded = "".join(_b64(digest[x], digest[y], digest[z], 4) for x, y, z in ORDER) + _b64(0, 0, digest[63], 2)
    prefix = "$6$" if rounds is None else f"$6$rounds={count}$"
    return f"{prefix}{salt[:16]}${encoded}"


def verify(password: str, hashed: str) -> bool:
    """Whether a `$6$` hash is of this password (other schemes: no)."""
    if not hashed.startswith("$6$"):
        return False
    parts = hashed[3:].split("$")
    rounds = None
    if parts and parts[0].startswith("rounds="):
        number = parts.pop(0)[len("rounds="):]
        if not number.isdigit():
            return False
        rounds = int(number)
    if len(parts) != 2:
        return False
    return hmac.compare_digest(sha512_crypt(password, parts[0], rounds), hashed)


def new_salt() -> str:
    return "".join(secrets.choice(ITOA64) for _ in range(16))


def read_hashes(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(4 * 1024 * 1024)
    except FileNotFoundError:
        return {}
    hashes = {}
    for line in text.splitlines():
        name, sep, hashed = line.partition(":")
        if sep:
            hashes[name] = hashed
    return hashes


def render(users: list[dict[str, str]], existing: dict[str, str]) -> str:
    lines = []
    for user in users:
        kept = existing.get(user["name"], "")
        hashed = kept if verify(user["password"], kept) else sha512_crypt(user["password"], new_salt())
        lines.append(f"{user['name']}:{hashed}\n")
    return "".join(lines)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "users": {"type": "list", "elements": "dict", "required": True, "no_log": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "required": True},
            "mode": {"type": "str", "default": "0640"},
        },
        supports_check_mode=True,
    )
    path, users = module.params["path"], module.params["users"]
    for user in users:
        if not isinstance(user.get("name"), str) or not isinstance(user.get("password"), str) or ":" in user["name"]:
            module.fail_json(msg="each user is {name, password}, strings, the name without `:`")
    existing = read_hashes(path)
    content = render(users, existing)
    current = "".join(f"{name}:{hashed}\n" for name, hashed in existing.items())
    changed = content != current or not os.path.exists(path)
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        handle, temporary = tempfile.mkstemp(prefix=".htpasswd-", dir=directory)
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            if os.path.exists(temporary):
                os.unlink(temporary)
            module.fail_json(msg=f"cannot write {path}: {exc.strerror}")
    file_args = module.load_file_common_arguments(
        {"path": path, "owner": module.params["owner"], "group": module.params["group"], "mode": module.params["mode"]})
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, users=[user["name"] for user in users])


if __name__ == "__main__":
    main()
