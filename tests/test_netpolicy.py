"""Tests for the backend address policy that keeps the gateway from being an SSRF tool.

Nearly everything here runs without the network: addresses are judged with
``check_address`` or through a fake resolver. The only real lookups are of
``localhost`` and of a ``.invalid`` name, which RFC 6761 guarantees never resolves.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from webapp.services.netpolicy import (
    AddressRefused,
    BackendURLError,
    check_address,
    normalize_url,
    parse_networks,
    resolve_and_check,
)

SETTING = "ALLOWED_BACKEND_NETWORKS"


def fake_resolver(*addresses: str):
    """A getaddrinfo stand-in that answers with ``addresses`` for any host, and records calls."""
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        calls.append((host, port))
        results = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            results.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return results

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def failing_resolver(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
    """Fails the test if called: literal hosts must be judged without a lookup."""
    raise AssertionError(f"resolver must not be called for literal host {host!r}")


# --- literal tricks ---------------------------------------------------------------

LITERAL_TRICKS = [
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://127.0.0.1./", "127.0.0.1"),
    ("http://[::1]/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "127.0.0.1"),
    ("http://0.0.0.0/", "0.0.0.0"),
    ("http://0/", "0.0.0.0"),
    ("http://[0:0:0:0:0:0:0:1]:8080/", "::1"),
]


@pytest.mark.parametrize(("url", "address"), LITERAL_TRICKS)
def test_literal_tricks_are_refused_without_resolving(url: str, address: str) -> None:
    with pytest.raises(AddressRefused) as info:
        resolve_and_check(url, (), resolver=failing_resolver)
    message = str(info.value)
    assert address in message
    assert SETTING in message


def test_localhost_is_refused_with_real_resolver() -> None:
    with pytest.raises(AddressRefused) as info:
        resolve_and_check("http://localhost/", ())
    message = str(info.value)
    assert '"localhost"' in message
    assert "loopback" in message
    assert SETTING in message
    assert info.value.address in ("127.0.0.1", "::1")


def test_literal_tricks_are_judged_like_the_system_resolver() -> None:
    """Our own parse of the legacy spellings must agree with what the C resolver does."""
    agreed = 0
    for url, address in LITERAL_TRICKS[:5]:
        host = url.removeprefix("http://").rstrip("/")
        try:
            infos = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
        except socket.gaierror:
            # A resolver that rejects the spelling cannot be tricked by it either.
            continue
        assert {info[4][0] for info in infos} == {address}
        agreed += 1
    # glibc's inet_aton accepts every one of these spellings.
    assert agreed > 0


def test_loopback_refusal_suggests_loopback_block() -> None:
    with pytest.raises(AddressRefused) as info:
        check_address("127.0.0.1", ())
    assert f"{SETTING}=127.0.0.0/8" in str(info.value)
    assert info.value.address == "127.0.0.1"


# --- address classes --------------------------------------------------------------

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "not globally routable"),
    ("100.127.255.254", "not globally routable"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "not globally routable"),
    ("198.18.0.1", "not globally routable"),
    ("2001:db8::1", "not globally routable"),
    ("fec0::1", "not globally routable"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::", "link-local"),
    ("64:ff9b::a00:1", "private"),
    ("::7f00:1", "loopback"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_non_global_addresses_are_refused(address: str, reason: str) -> None:
    with pytest.raises(AddressRefused) as info:
        check_address(address, ())
    message = str(info.value)
    assert reason in message
    assert address.split("%")[0] in message
    assert SETTING in message


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::200e", "2002:808:808::"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert check_address(address, ()) is None
    assert check_address(ipaddress.ip_address(address), ()) is None


def test_public_address_through_fake_resolver_is_returned() -> None:
    resolver = fake_resolver("8.8.8.8", "2606:4700::1111", "8.8.8.8")
    assert resolve_and_check("https://api.example.com/v1", (), resolver=resolver) == [
        "8.8.8.8",
        "2606:4700::1111",
    ]
    assert resolver.calls == [("api.example.com", 443)]


def test_explicit_port_is_passed_to_resolver() -> None:
    resolver = fake_resolver("8.8.8.8")
    resolve_and_check("http://api.example.com:8000", (), resolver=resolver)
    assert resolver.calls == [("api.example.com", 8000)]


# --- allow list -------------------------------------------------------------------

# localhost may resolve to ::1 as well as 127.0.0.1 (it depends on /etc/hosts), and
# every resolved address must be allowed, so loopback needs both families.
LOOPBACK_ALLOWED = parse_networks("127.0.0.0/8, ::1/128")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/", "http://localhost:9/", "http://[::1]:9", "http://127.1:9"],
)
def test_allow_list_lets_loopback_through(url: str) -> None:
    addresses = resolve_and_check(url, LOOPBACK_ALLOWED)
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/",
        "http://[fe80::1]/",
    ],
)
def test_allow_list_for_loopback_does_not_allow_others(url: str) -> None:
    with pytest.raises(AddressRefused) as info:
        resolve_and_check(url, LOOPBACK_ALLOWED, resolver=failing_resolver)
    assert SETTING in str(info.value)


def test_mapped_address_is_allowed_by_ipv4_network() -> None:
    allowed = parse_networks("10.0.0.0/8")
    assert check_address("::ffff:10.1.2.3", allowed) is None
    assert resolve_and_check(
        "http://[::ffff:10.1.2.3]:8000/", allowed, resolver=failing_resolver
    ) == ["::ffff:10.1.2.3"]


def test_mapped_address_is_not_allowed_by_ipv6_network_covering_its_ipv6_form() -> None:
    """A mapped address is judged only as the IPv4 host it reaches."""
    with pytest.raises(AddressRefused) as info:
        check_address("::ffff:10.1.2.3", parse_networks("::/0"))
    assert "10.1.2.3" in str(info.value)


def test_single_host_allow_entry() -> None:
    allowed = parse_networks("192.168.1.20")
    assert check_address("192.168.1.20", allowed) is None
    with pytest.raises(AddressRefused):
        check_address("192.168.1.21", allowed)


def test_refusal_suggests_host_cidr_for_non_loopback() -> None:
    with pytest.raises(AddressRefused) as info:
        check_address("192.168.1.20", ())
    assert f"{SETTING}=192.168.1.20/32" in str(info.value)
    # The suggestion in the message must actually work.
    assert check_address("192.168.1.20", parse_networks("192.168.1.20/32")) is None


# --- parse_networks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("  ", ()),
        (" , ,", ()),
        ("127.0.0.0/8", ("127.0.0.0/8",)),
        (" 127.0.0.0/8 , 192.168.1.0/24 ", ("127.0.0.0/8", "192.168.1.0/24")),
        ("10.0.0.5", ("10.0.0.5/32",)),
        ("::1", ("::1/128",)),
        ("fd00::/8,127.0.0.0/8,", ("fd00::/8", "127.0.0.0/8")),
        ("192.168.1.10/24", ("192.168.1.0/24",)),
        ("10.0.0.0/8,10.0.0.0/8", ("10.0.0.0/8",)),
        (["127.0.0.0/8", " ::1 "], ("127.0.0.0/8", "::1/128")),
        ((ipaddress.ip_network("10.0.0.0/8"),), ("10.0.0.0/8",)),
    ],
)
def test_parse_networks_good(value: object, expected: tuple[str, ...]) -> None:
    assert parse_networks(value) == tuple(ipaddress.ip_network(n) for n in expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("not-a-network", "not-a-network"),
        ("127.0.0.0/8, 10.0.0.0/33", "10.0.0.0/33"),
        ("256.0.0.1", "256.0.0.1"),
        ("127.0.0.0/8;10.0.0.0/8", "127.0.0.0/8;10.0.0.0/8"),
        (["10.0.0.0/8", "localhost"], "localhost"),
    ],
)
def test_parse_networks_bad(value: object, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_networks(value)  # type: ignore[arg-type]
    assert SETTING in str(info.value)
    assert bad in str(info.value)


def test_parse_networks_rejects_non_string_entries() -> None:
    with pytest.raises(TypeError, match=SETTING):
        parse_networks([127])  # type: ignore[list-item]


def test_parse_networks_is_idempotent() -> None:
    once = parse_networks("127.0.0.0/8,::1")
    assert parse_networks(once) == once


# --- normalize_url ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://host:8000", "http://host:8000"),
        ("http://host:8000/", "http://host:8000"),
        ("  http://host:8000/  ", "http://host:8000"),
        ("http://host:8000/v1", "http://host:8000"),
        ("http://host:8000/v1/", "http://host:8000"),
        ("http://host:8000/prefix/v1", "http://host:8000/prefix"),
        ("http://host:8000/prefix/", "http://host:8000/prefix"),
        ("http://host/v10", "http://host/v10"),
        ("HTTP://Host.Example.COM:8000/Path", "http://host.example.com:8000/Path"),
        ("HTTPS://EXAMPLE.COM", "https://example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[2001:DB8::1]/v1", "http://[2001:db8::1]"),
        ("http://host:/", "http://host"),
        ("http://host:08000", "http://host:8000"),
        ("http://bücher.example/", "http://xn--bcher-kva.example"),
    ],
)
def test_normalize_url_good(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://user:secret@host/", "api_key"),
        ("http://token@host/", "api_key"),
        ("ftp://host/", "ftp"),
        ("file:///etc/passwd", "file"),
        ("gopher://host/", "gopher"),
        ("host:8000", "http://"),
        ("//host:8000", "http://"),
        ("http:/host", "http://"),
        ("http://", "no host"),
        ("http:///v1", "no host"),
        ("http://:8000/", "no host"),
        ("http://host:99999/", "out of range"),
        ("http://host:0/", "out of range"),
        ("http://host:http/", "not a number"),
        ("http://host:+80/", "not a number"),
        ("http://host/?x=1", "query"),
        ("http://host/?", "query"),
        ("http://host/#frag", "fragment"),
        ("", "empty"),
        ("http://host/" + "a" * 2048, "too long"),
        ("http://ho st/", "spaces"),
        ("http://host\n.example/", "spaces"),
        ("http://evil.example\\@127.0.0.1/", "backslash"),
        ("http://%31%32%37.0.0.1/", "not a valid host"),
        ("http://::1/", "brackets"),
        ("http://[::1/", "IPv6"),
        ("http://[not-v6]/", "malformed"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://[::1]x/", "after the IPv6"),
        ("http://08.0.0.1/", "not a valid IPv4"),
        ("http://4294967296/", "not a valid IPv4"),
        ("http://1.2.3.4.5/", "not a valid IPv4"),
        ("http://a..b/", "not a valid host"),
    ],
)
def test_normalize_url_bad(url: str, fragment: str) -> None:
    with pytest.raises(BackendURLError) as info:
        normalize_url(url)
    assert fragment in str(info.value)


def test_errors_are_value_errors() -> None:
    """Callers that only know ValueError (form validation) still catch both."""
    assert issubclass(BackendURLError, ValueError)
    assert issubclass(AddressRefused, ValueError)
    assert not issubclass(AddressRefused, BackendURLError)


def test_bad_url_is_refused_by_resolve_and_check_too() -> None:
    with pytest.raises(BackendURLError, match="api_key"):
        resolve_and_check("http://u:p@example.com/", (), resolver=failing_resolver)


# --- resolution -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (("8.8.8.8", "10.0.0.1"), "10.0.0.1"),
        (("10.0.0.1", "8.8.8.8"), "10.0.0.1"),
        (("2606:4700::1111", "::1"), "::1"),
        (("8.8.8.8", "::ffff:169.254.169.254"), "169.254.169.254"),
        (("1.1.1.1", "fe80::1%eth0"), "fe80::1"),
    ],
)
def test_any_refused_address_among_public_ones_refuses_the_host(
    addresses: tuple[str, ...], refused: str
) -> None:
    with pytest.raises(AddressRefused) as info:
        resolve_and_check("http://rebind.example.com/", (), resolver=fake_resolver(*addresses))
    message = str(info.value)
    assert refused in message
    assert '"rebind.example.com"' in message
    assert SETTING in message


def test_mixed_resolution_passes_when_private_part_is_allowed() -> None:
    resolver = fake_resolver("8.8.8.8", "10.0.0.1")
    allowed = parse_networks("10.0.0.0/8")
    assert resolve_and_check("http://mixed.example.com/", allowed, resolver=resolver) == [
        "8.8.8.8",
        "10.0.0.1",
    ]


def test_unresolvable_host_is_a_url_error() -> None:
    with pytest.raises(BackendURLError) as info:
        resolve_and_check("http://does-not-exist.invalid/", ())
    assert str(info.value) == 'cannot resolve host "does-not-exist.invalid"'


@pytest.mark.parametrize(
    "error",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), TimeoutError()],
)
def test_resolver_failure_is_a_url_error(error: Exception) -> None:
    def resolver(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        raise error

    with pytest.raises(BackendURLError, match='cannot resolve host "backend.example.com"'):
        resolve_and_check("http://backend.example.com/", (), resolver=resolver)


def test_empty_resolution_is_a_url_error() -> None:
    with pytest.raises(BackendURLError, match="cannot resolve host"):
        resolve_and_check("http://backend.example.com/", (), resolver=fake_resolver())


# --- check_address input handling -------------------------------------------------


def test_check_address_accepts_peer_address_forms() -> None:
    """Peer addresses come from getpeername(): plain, zoned or mapped strings."""
    allowed = parse_networks("fe80::/10")
    assert check_address("fe80::1%eth0", allowed) is None
    assert check_address("[2606:4700::1111]", ()) is None
    with pytest.raises(BackendURLError):
        check_address("not an address", ())
