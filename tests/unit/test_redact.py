"""gpuhost.redact: a URL's credentials (user information, query and fragment values) are never shown."""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuhost.model import Finding, Severity, SourceError, UsageError, for_humans
from gpuhost.redact import MASK, redact_all, redact_url, redact_urls

CASES = [
    ("http://user:pw@127.0.0.1:8188/system_stats", "http://***@127.0.0.1:8188/system_stats"),
    ("https://TOKEN@models.example.com/comfyui", "https://***@models.example.com/comfyui"),
    ("https://:pw@host/x", "https://***@host/x"),
    ("https://@host/x", "https://***@host/x"),
    ("https://user:p%40ss%3Aw%2Fd@host/", "https://***@host/"),
    ("https://us@er:p@ss@host:443/a", "https://***@host:443/a"),
    ("tcp://user:pw@10.0.0.1:2375", "tcp://***@10.0.0.1:2375"),
    ("s3://key:secret@bucket/prefix", "s3://***@bucket/prefix"),
    # an unencoded `/`, `?` or `#` in a password: a URL parser reads the host into the path
    ("http://user:pa/ss@host:1/", "http://***@host:1/"),
    ("http://user:pa?ss@host:1/", "http://***@host:1/"),
    ("http://user:pa#ss@host:1/", "http://***@host:1/"),
    (
        "https://b.s3.amazonaws.com/m.safetensors?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE"
        "&X-Amz-Security-Token=tok&X-Amz-Signature=abcdef",
        "https://b.s3.amazonaws.com/m.safetensors?X-Amz-Algorithm=***&X-Amz-Credential=***"
        "&X-Amz-Security-Token=***&X-Amz-Signature=***",
    ),
    ("https://h/x?token=abc&sig=def", "https://h/x?token=***&sig=***"),
    ("https://h/x?SECRETALONE", "https://h/x?***"),
    ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=***"),
    # nothing secret: unchanged
    ("http://127.0.0.1:8188/system_stats", "http://127.0.0.1:8188/system_stats"),
    ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("https://host/models/name@fp16.safetensors", "https://host/models/name@fp16.safetensors"),
    ("http://[::1]/x@y", "http://[::1]/x@y"),
    # a port before an `@` in the path reads like a password with a `/` in it: more hidden, never less
    ("http://host:8188/x@y", "http://***@y"),
]


@pytest.mark.parametrize(("url", "shown"), CASES)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # twice changes nothing
    assert redact_urls(f"GET {url} failed") == f"GET {shown} failed"
    assert redact_urls(f"source {url!r}: bad") == f"source {shown!r}: bad"
    assert redact_urls(f'could not connect to "{url}"') == f'could not connect to "{shown}"'
    assert redact_urls(f"({url}), <{url}>; `{url}`.") == f"({shown}), <{shown}>; `{shown}`."
    assert redact_urls(f'{{"a":"{url}","b":"{url}"}}') == f'{{"a":"{shown}","b":"{shown}"}}'


def test_text_without_urls_is_unchanged() -> None:
    for text in ("", "plain words", "user:pw@host is not a URL", "a:b", "ratio 3:1 @ 5"):
        assert redact_urls(text) == text
        assert redact_url(text) == text


def test_redact_all_walks_json_values() -> None:
    payload = {"url": "http://u:pw@h:1/", "list": ["x", "https://t@h/?k=v"], "n": 1, "f": 1.5, "none": None,
               "nested": {"http://k:pw@h/": True}}
    out = json.dumps(redact_all(payload))
    assert "pw" not in out and "t@h" not in out and "k=v" not in out
    assert redact_all(payload)["n"] == 1 and redact_all(payload)["none"] is None


def test_messages_and_errors_redact_at_construction() -> None:
    url = "https://user:hunter2@h:1/x?token=sekrit"
    for text in (
        str(UsageError(f"--url {url!r}: bad")),
        str(SourceError(url, f"cannot reach {url}")),
        SourceError(url, "x").source,
        Finding("x", "comfyui", Severity.FAIL, f"at {url}", f"retry {url}").message,
        Finding("x", "comfyui", Severity.FAIL, "m", f"retry {url}").remedy,
        for_humans(f"see {url}"),
    ):
        assert "hunter2" not in text and "sekrit" not in text and MASK in text


# passwords of any characters a user might type, encoded or not
PASSWORD = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@"), min_size=6, max_size=30
).map(lambda s: "Z" + s + "Q")
USER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", max_size=10)
HOST = st.sampled_from(["127.0.0.1", "[::1]", "models.example.com", "h"])
PORT = st.sampled_from(["", ":1", ":8188", ":65535"])
PATH = st.sampled_from(["", "/", "/a/b", "/system_stats", "/x@y"])
QUERY_PATH = st.sampled_from(["", "/", "/a/b", "/system_stats"])
SCHEME = st.sampled_from(["http", "https", "s3", "tcp"])


@given(SCHEME, USER, PASSWORD, HOST, PORT, PATH, st.booleans())
def test_no_password_survives(scheme: str, user: str, password: str, host: str, port: str, path: str,
                              encode: bool) -> None:
    written = quote(password, safe="") if encode else password
    url = f"{scheme}://{user}:{written}@{host}{port}{path}"
    for shown in (redact_url(url), redact_urls(f"error at {url} now"), redact_urls(repr(url))):
        assert written not in shown
        assert unquote(written) not in shown


@given(SCHEME, HOST, QUERY_PATH, st.lists(st.tuples(st.sampled_from(["X-Amz-Signature", "token", "sig", "k"]),
                                              PASSWORD), min_size=1, max_size=4))
def test_no_query_value_survives(scheme: str, host: str, path: str, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
    url = f"{scheme}://{host}{path or '/'}?{query}"
    shown = redact_url(url)
    for _name, value in params:
        assert quote(value, safe="") not in shown
    assert shown.startswith(f"{scheme}://{host}")
