"""Properties of the parsers every command shares: sizes, durations, image references, Docker addresses.

Whatever the text, a parser either returns a value in its documented range or raises UsageError
(ValueError for Docker addresses, which the front ends turn into exit 2); nothing else escapes.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gpuhost.engine import check_address
from gpuhost.model import UsageError
from gpuhost.redact import redact_url
from gpuhost.refs import MAX_NAME_LENGTH, check_image_reference
from gpuhost.units import MAX_BYTES, MAX_SECONDS, parse_duration, parse_size, positive_number

# text that looks like what people type, plus the odd characters that broke parsers before
NUMBERISH = st.text(alphabet="0123456789.eE+-_ :/@smhkKgGiIbBtTnNaAfF\n\t\x00é", max_size=40)
ANY_TEXT = st.one_of(NUMBERISH, st.text(max_size=60))


@given(ANY_TEXT)
@example("nan")
@example("inf")
@example("-inf")
@example("9" * 400)
@example("1e400GB")
@example("140GB\n")
@example(" 140GB")
def test_a_size_is_a_whole_number_of_bytes_in_range_or_a_usage_error(text: str) -> None:
    try:
        value = parse_size(text, "--image-size")
    except UsageError as exc:
        assert "--image-size" in str(exc) and exc.remedy
        return
    assert isinstance(value, int) and 0 < value <= MAX_BYTES
    assert text == text.strip()


@given(st.one_of(st.floats(), st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)))
def test_sizes_read_from_files_are_checked_the_same_way(value: object) -> None:
    try:
        result = parse_size(value, "size", allow_zero=True)
    except UsageError:
        return
    assert isinstance(result, int) and 0 <= result <= MAX_BYTES


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "Infinity", "-1GB", "9" * 400, "1e400", "140GB\n", "\t1GB"])
def test_sizes_refuse_non_finite_negative_huge_and_padded_values(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text, "--for-image-size")


@given(ANY_TEXT)
@example("nan")
@example("9" * 400)
@example("1e400")
@example("5m\n")
@example("0")
def test_a_duration_is_positive_finite_and_bounded_or_a_usage_error(text: str) -> None:
    try:
        seconds = parse_duration(text, "--timeout")
    except UsageError as exc:
        assert "--timeout" in str(exc)
        return
    assert math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS


@given(st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30)))
@example(math.nan)
@example(math.inf)
def test_positive_number_refuses_nan_infinities_and_out_of_range(value: float) -> None:
    try:
        result = positive_number(value, "--poll-interval", maximum=3600)
    except UsageError as exc:
        assert "--poll-interval" in str(exc)
        return
    assert math.isfinite(result) and 0 < result <= 3600


# --- image references (Docker's distribution/reference grammar) ----------------------------------

VALID_REFERENCES = [
    "comfyui",
    "comfyui:0.3.64",
    "library/ubuntu:24.04",
    "ghcr.io/comfyanonymous/comfyui:latest",
    "localhost:5000/team/app_v2:1.0",
    "registry.example.com:443/a/b-c/d__e:TAG_1.x",
    "[::1]:5000/app:1",
    "ubuntu@sha256:" + "a" * 64,
    "ubuntu:24.04@sha256:" + "0123456789abcdef" * 4,
    "local/debian-systemd:bookworm",
]
INVALID_REFERENCES = [
    "",
    "..",
    "../../info",
    "a b",
    "comfyui:0.3.64\n",
    " comfyui",
    "Comfyui:1",
    "comfyui:",
    ":tag",
    "comfyui:" + "t" * 129,
    "comfyui:.tag",
    "a//b",
    "a/",
    "-a",
    "a-",
    "a..b",
    "ubuntu@sha256:abc",
    "ubuntu@sha256:" + "g" * 64,
    "x" * (MAX_NAME_LENGTH + 1),
    "a%2F..%2Finfo",
    "a?b",
    "a#b",
    "a\x00b",
]


@pytest.mark.parametrize("reference", VALID_REFERENCES)
def test_valid_image_references(reference: str) -> None:
    assert check_image_reference(reference, "--when-image-present") == reference


@pytest.mark.parametrize("reference", INVALID_REFERENCES)
def test_invalid_image_references_are_usage_errors(reference: str) -> None:
    with pytest.raises(UsageError, match="--when-image-present"):
        check_image_reference(reference, "--when-image-present")


@given(st.text(max_size=80))
@example("../../info")
@example("a b")
def test_an_accepted_reference_is_safe_in_an_engine_api_path(text: str) -> None:
    try:
        reference = check_image_reference(text, "IMAGE")
    except UsageError:
        return
    # nothing the Engine API would decode into another path, query or fragment
    assert reference == text and text.isascii() and text.isprintable()
    assert not set(text) & set(" ?#%\\\"'") and ".." not in text.split("@")[0].split("/")
    assert 0 < len(text.split("@")[0]) <= MAX_NAME_LENGTH + 129


# --- Docker addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "tpc://10.0.0.5:2375",
        "10.0.0.5:2375",
        "unix://relative.sock",
        "tcp://host",
        "tcp://host:99999",
        "tcp://host:0",
        "tcp://host:port",
        "tcp://:2375",
        "tcp://host:2375/path",
        "unix:///var/run/docker.sock\n",
        " tcp://127.0.0.1:2375",
        "ssh://user@host",
        "",
    ],
)
def test_malformed_docker_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        check_address(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:///var/run/docker.sock", ("/var/run/docker.sock", "")),
        ("tcp://127.0.0.1:2375", (None, "127.0.0.1:2375")),
        ("http://localhost:2375/", (None, "localhost:2375")),
    ],
)
def test_docker_addresses(address: str, expected: tuple[str | None, str]) -> None:
    assert check_address(address) == expected


@pytest.mark.parametrize("address", [
    "tcp://admin:Pw0rdX@10.0.0.1:2375", "http://Pw0rdX@localhost:2375/", " tcp://u:Pw0rdX@h:1",
    "unix://u:Pw0rdX@/var/run/docker.sock", "ftp://u:Pw0rdX@host",
])
def test_a_refused_docker_address_never_shows_its_password(address: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_address(address)
    assert "Pw0rdX" not in str(refused.value)
    assert "***@" in str(refused.value)


@given(st.one_of(st.text(max_size=60), st.from_regex(r"(tcp|unix|http|tpc)://[^\s]{0,30}", fullmatch=True)))
def test_a_docker_address_is_a_socket_path_or_host_port_or_a_value_error(address: str) -> None:
    try:
        path, netloc = check_address(address)
    except ValueError as exc:
        # the address is shown, with any user or password masked
        shown = redact_url(address)
        assert repr(shown)[:20] in str(exc) or shown[:10] in str(exc)
        return
    assert (path is None) != (netloc == "")
    if path is not None:
        assert path.startswith("/")
    else:
        host, _, port = netloc.rpartition(":")
        assert host and 1 <= int(port) <= 65535
