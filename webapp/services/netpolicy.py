"""Which backend addresses the gateway may connect to.

Owners register the base URLs of their model servers, so those URLs are user input.
Without a policy the gateway would happily fetch ``http://169.254.169.254/`` (cloud
credentials), ``http://127.0.0.1:6379/`` (a local Redis) or anything on the private
network it sits in, and report the answer back: a textbook SSRF tool. This module
refuses every address that is not globally routable unless the operator has listed a
network that covers it in ``ALLOWED_BACKEND_NETWORKS``.

Checking the URL text is not enough, because the same address has many spellings
(``2130706433``, ``0x7f000001``, ``127.1``, ``[::ffff:127.0.0.1]``, ``localhost``...)
and a hostname can resolve to anything. So the checks work on resolved addresses:
``resolve_and_check`` runs at registration and before every probe, and the connection
code re-checks the connected socket's peer address with ``check_address`` so that a
DNS answer that changes between the check and the connect (DNS rebinding) is caught.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SETTING_NAME",
    "AddressRefused",
    "BackendURLError",
    "Network",
    "check_address",
    "normalize_url",
    "parse_networks",
    "resolve_and_check",
]

SETTING_NAME = "ALLOWED_BACKEND_NETWORKS"

MAX_URL_LENGTH = 2048

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Iterable[Any]]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# The RFC 1918 / RFC 4193 ranges are named explicitly because ``ipaddress.is_private``
# also covers documentation, benchmarking and other special ranges; the user-facing
# reason "private" should mean what network people mean by it.
_PRIVATE_NETWORKS: tuple[Network, ...] = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv6Network("fc00::/7"),
)
# Carrier-grade NAT space: not private by RFC 1918 but just as internal, and
# ``is_private`` is False for it, so it needs its own entry.
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
# Prefixes whose IPv6 addresses carry an IPv4 address that a relay or translator may
# end up contacting; the embedded address is judged too.
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

# Host names are limited to the letters DNS actually uses. Different URL parsers
# (urllib, httpx, browsers' WHATWG parser) disagree about backslashes, percent
# escapes and odd characters in the authority; refusing them leaves no room for a
# URL that we judge as one host while the HTTP client connects to another.
_HOSTNAME_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_.])?$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PORT_RE = re.compile(r"^[0-9]*$")


class BackendURLError(ValueError):
    """The URL itself is unusable (scheme, host, port, credentials...).

    ``str()`` is a user-facing message: it is shown as-is on the registration form.
    """


class AddressRefused(ValueError):
    """The URL resolves to an address the policy refuses.

    ``str()`` names the address, the reason and how to allow it, because the person
    reading it is usually an operator who runs a backend on purpose on localhost or the
    LAN and needs to know which setting to change. ``address`` is the refused address
    as text, ``reason`` the short reason and ``host`` the name that resolved to it.
    """

    address: str
    reason: str
    host: str | None

    def __init__(
        self, address: str, reason: str, *, host: str | None = None, example: str = ""
    ) -> None:
        self.address = address
        self.reason = reason
        self.host = host
        example = example or "127.0.0.0/8"
        where = (
            f'host "{host}" resolves to {address}'
            if host and host != address
            else f"address {address}"
        )
        super().__init__(
            f"Backend {where}, which is refused: {reason}. "
            f"If this backend is meant to be reachable, set {SETTING_NAME} to a CIDR that "
            f"covers it, e.g. {SETTING_NAME}={example}."
        )


def parse_networks(value: str | Iterable[str | Network] | None) -> tuple[Network, ...]:
    """Parse the ``ALLOWED_BACKEND_NETWORKS`` setting into networks.

    Accepts comma-separated CIDRs (whitespace tolerated) or an iterable of them; an
    already-parsed tuple passes through so the configuration can be re-validated.
    A bare address means a single host. Host bits in a CIDR (``192.168.1.10/24``) are
    accepted and masked because the intent is unambiguous. A bad entry raises a
    ``ValueError`` that names the setting and the entry, so start-up fails loudly
    instead of silently allowing less (or more) than the operator meant.
    """
    if value is None:
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    networks: list[Network] = []
    for item in items:
        network = _parse_network_entry(item)
        if network is not None and network not in networks:
            networks.append(network)
    return tuple(networks)


def _parse_network_entry(item: object) -> Network | None:
    """Turn one entry into a network; ``None`` for an empty entry (``"a,,b"``, trailing comma)."""
    if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return item
    if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(item)
    if not isinstance(item, str):
        # TypeError, not ValueError: a non-string entry is a programming error, and the
        # settings code catches both when it wraps the message for the operator.
        raise TypeError(
            f"{SETTING_NAME}: {item!r} is not a CIDR network (expected e.g. 127.0.0.0/8)"
        )
    entry = item.strip()
    if not entry:
        return None
    try:
        # ``ip_network`` turns a bare address into a /32 or /128 by itself.
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(
            f"{SETTING_NAME}: {entry!r} is not a valid CIDR network or IP address "
            "(expected comma-separated entries such as 127.0.0.0/8, 192.168.1.0/24 or 10.0.0.5)"
        ) from None


@dataclass(frozen=True)
class _ParsedURL:
    """The pieces of a validated backend URL that the rest of this module needs."""

    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.scheme]

    def geturl(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}{self.path}"


def normalize_url(url: str) -> str:
    """Validate and normalise a backend base URL, raising ``BackendURLError`` if unusable.

    Owners paste URLs from their server's README, so common variations are tidied
    (surrounding whitespace, trailing ``/``, a trailing ``/v1`` since the gateway appends
    ``/v1/...`` itself, upper-case scheme or host). Anything that would make the URL
    mean something other than "this host, this port, this path prefix" is refused.
    """
    return _parse_url(url).geturl()


def _parse_url(url: str) -> _ParsedURL:
    if not isinstance(url, str):
        raise BackendURLError("The backend URL must be text.")
    text = url.strip()
    if not text:
        raise BackendURLError("The backend URL is empty.")
    if len(text) > MAX_URL_LENGTH:
        raise BackendURLError(f"The backend URL is too long (maximum {MAX_URL_LENGTH} characters).")
    # urlsplit silently drops tabs and newlines, so "http://127.0.0.1\n.example.com" would
    # be judged differently from what another parser sees; refuse instead of guessing.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise BackendURLError("The backend URL must not contain spaces or control characters.")
    if "\\" in text:
        raise BackendURLError("The backend URL must not contain backslashes.")
    # Checked on the raw text because urlsplit reports "http://h/?" and "http://h/" alike.
    if "?" in text:
        raise BackendURLError(
            "The backend URL must not have a query string (?...); give only the base URL."
        )
    if "#" in text:
        raise BackendURLError(
            "The backend URL must not have a fragment (#...); give only the base URL."
        )
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise BackendURLError(f"The backend URL is malformed: {exc}.") from None

    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        if "://" not in text:
            raise BackendURLError("The backend URL must start with http:// or https://.")
        raise BackendURLError(
            f'The backend URL scheme "{scheme}" is not supported; use http:// or https://.'
        )
    if not text[len(parts.scheme) :].startswith("://"):
        raise BackendURLError("The backend URL must start with http:// or https://.")

    netloc = parts.netloc
    if "@" in netloc:
        raise BackendURLError(
            "The backend URL must not contain credentials (user:password@); "
            "put the backend's key in the api_key field instead."
        )
    host, port = _split_host_port(netloc)

    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")].rstrip("/")
    return _ParsedURL(scheme=scheme, host=host, port=port, path=path)


def _split_host_port(netloc: str) -> tuple[str, int | None]:
    """Split the authority into a lower-cased host and an optional port.

    Done by hand rather than with ``SplitResult.hostname``/``.port`` because ``.port``
    raises a bare ``ValueError`` for a bad port, accepts port 0 and silently turns
    ``host:`` into no port; every problem here should become a readable
    ``BackendURLError`` that says what to fix.
    """
    if not netloc:
        raise BackendURLError("The backend URL has no host; expected e.g. http://my-server:8000.")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise BackendURLError("The backend URL has an unterminated IPv6 address ([...).")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if "%" in host:
            raise BackendURLError("IPv6 zone ids (%...) are not supported in backend URLs.")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BackendURLError(f'"[{host}]" is not a valid IPv6 address.') from None
        if rest and not rest.startswith(":"):
            raise BackendURLError("Unexpected text after the IPv6 address in the backend URL.")
        # Kept as written (only lower-cased), not canonicalised, so what the owner sees
        # on the form is recognisably what they typed.
        host = host.lower()
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = netloc.rpartition(":")
        if not colon:
            host, port_text = netloc, None
        else:
            port_text = port_text_raw
        host = host.lower()
        if not host:
            raise BackendURLError(
                "The backend URL has no host; expected e.g. http://my-server:8000."
            )
        if ":" in host:
            raise BackendURLError("Put IPv6 addresses in brackets, e.g. http://[2001:db8::1]:8000.")
        host = _validate_hostname(host)

    port: int | None = None
    if port_text:
        if not _PORT_RE.match(port_text):
            raise BackendURLError(f'The backend URL port "{port_text}" is not a number.')
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise BackendURLError(f"The backend URL port {port} is out of range (1-65535).")
    return host, port


def _validate_hostname(host: str) -> str:
    """Check a registered-name host (or a dotted IPv4 literal) and return its ASCII form."""
    if not host.isascii():
        try:
            # Resolvers need the punycode form; converting here also means the stored
            # URL shows exactly the name that will be looked up.
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BackendURLError(
                f'The backend host "{host}" is not a valid domain name.'
            ) from None
    if len(host) > 253 or not _HOSTNAME_RE.match(host) or ".." in host:
        raise BackendURLError(f'The backend host "{host}" is not a valid host name or IP address.')
    # Surfaces malformed numeric hosts ("08.0.0.1", "4294967296") as URL errors early.
    _parse_ipv4_host(host)
    return host


def _parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """Parse the legacy IPv4 spellings that C resolvers and browsers accept.

    ``inet_aton`` (and so ``getaddrinfo``) reads ``2130706433``, ``0x7f000001``,
    ``127.1`` and ``0177.0.0.1`` as 127.0.0.1, while ``ipaddress`` rejects them all.
    Parsing them here with the WHATWG rules means the policy does not depend on which
    resolver is installed (gevent's c-ares resolver may differ from glibc). Returns
    ``None`` for a host name; raises ``BackendURLError`` for a host whose last label is
    numeric but which is not a valid address, since such a host is never a DNS name.
    """
    labels = host.removesuffix(".").split(".")
    if not _NUMERIC_LABEL_RE.match(labels[-1]):
        return None
    invalid = BackendURLError(f'The backend host "{host}" is not a valid IPv4 address.')
    if len(labels) > 4:
        raise invalid
    numbers: list[int] = []
    for label in labels:
        if not _NUMERIC_LABEL_RE.match(label):
            raise invalid
        try:
            if label.startswith("0x"):
                # int() accepts the "0x" prefix itself with base 16.
                numbers.append(int(label, 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label[1:], 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:
            # "0x" with no digits, or an octal label containing 8 or 9.
            raise invalid from None
    # All but the last label are single bytes; the last fills the remaining bytes.
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise invalid
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _to_address(address: str | Address) -> Address:
    """Parse an address, dropping an IPv6 zone id (``fe80::1%eth0``) and brackets."""
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        parsed: Address = address
    else:
        text = str(address).strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text = text.split("%", 1)[0]
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            raise BackendURLError(f'"{address}" is not a valid IP address.') from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id is not None:
        parsed = ipaddress.IPv6Address(parsed.packed)
    return parsed


def _format_address(address: Address) -> str:
    """Text for an address, writing IPv4-mapped ones dotted (``::ffff:10.0.0.1``).

    Python before 3.13 prints ``::ffff:a00:1``, which nobody recognises as the
    address they typed or the one ``getaddrinfo``/``getpeername`` reported.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _refusal_reason(address: Address) -> str | None:
    """Say why ``address`` is not a safe backend address, or ``None`` if it is.

    The checks are explicit rather than just ``not is_global`` because Python's
    ``is_global`` has gaps that vary by version (3.11 calls 224.0.0.1 and ff0e::1 global,
    and IPv4-embedding IPv6 prefixes are not looked through at all).
    """
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address (this includes the cloud metadata service 169.254.169.254)"
    if address.is_multicast:
        return "multicast address"
    if any(
        address in network for network in _PRIVATE_NETWORKS if network.version == address.version
    ):
        return "private address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return "not globally routable (shared address space 100.64.0.0/10)"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = _refusal_reason(embedded)
            if inner is not None:
                return f"it embeds the IPv4 address {embedded}, which is a {inner}"
        if address.is_site_local:
            return "not globally routable (deprecated site-local fec0::/10)"
    if address.is_reserved:
        return "reserved address"
    if address.is_private or not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4, NAT64 or IPv4-compatible address would lead to, if any."""
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    if address in _NAT64 or int(address) >> 32 == 0:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _example_network(address: Address) -> str:
    """A CIDR to suggest in the refusal message: the loopback block, else just this host."""
    if isinstance(address, ipaddress.IPv4Address) and address in _IPV4_LOOPBACK:
        return str(_IPV4_LOOPBACK)
    return f"{address}/{address.max_prefixlen}"


def check_address(
    address: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    allowed: Sequence[Network],
    *,
    host: str | None = None,
) -> None:
    """Raise ``AddressRefused`` unless ``address`` is globally routable or in ``allowed``.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) reaches the IPv4 host it maps, so
    it is judged purely as that IPv4 address, for refusing and for matching ``allowed``
    (an operator who allowed 127.0.0.0/8 expects a dual-stack socket's peer address
    ``::ffff:127.0.0.1`` to pass). ``host``, if given, only improves the message.
    """
    original = _to_address(address)
    judged: Address = original
    if isinstance(original, ipaddress.IPv6Address) and original.ipv4_mapped is not None:
        judged = original.ipv4_mapped
    if any(judged in network for network in allowed if network.version == judged.version):
        return
    reason = _refusal_reason(judged)
    if reason is None:
        return
    shown = str(original) if judged is original else f"{_format_address(original)} (IPv4 {judged})"
    raise AddressRefused(shown, reason, host=host, example=_example_network(judged))


def resolve_and_check(
    url: str, allowed: Sequence[Network], resolver: Resolver | None = None
) -> list[str]:
    """Resolve the URL's host and check every address; return the addresses.

    Every address must pass, not just the first: the HTTP client may try them in any
    order (and happy-eyeballs tries several), so one refused address among public ones
    is still a way in. ``resolver`` defaults to ``socket.getaddrinfo`` looked up at call
    time, so gevent's monkey-patched cooperative version is used when active; it is
    called as ``resolver(host, port)`` and must return ``getaddrinfo``-shaped tuples.
    IP literals, including the legacy IPv4 spellings, are judged without asking the
    resolver so the outcome does not depend on which resolver is installed.
    """
    parsed = _parse_url(url)
    host = parsed.host
    literal: Address | None
    if ":" in host:
        literal = ipaddress.IPv6Address(host)
    else:
        literal = _parse_ipv4_host(host)
    if literal is not None:
        formatted = _format_address(literal)
        # Naming the host only helps when it is spelt differently ("2130706433").
        check_address(literal, allowed, host=None if host == formatted else host)
        return [formatted]

    resolve = resolver if resolver is not None else socket.getaddrinfo
    try:
        results = list(resolve(host, parsed.effective_port))
    except (OSError, UnicodeError):
        raise BackendURLError(f'cannot resolve host "{host}"') from None
    addresses: list[str] = []
    for result in results:
        sockaddr = result[4]
        candidate = sockaddr[0] if isinstance(sockaddr, tuple | list) else sockaddr
        # getaddrinfo returns one entry per socket type; the address is what matters.
        if isinstance(candidate, str) and candidate not in addresses:
            addresses.append(candidate)
    if not addresses:
        raise BackendURLError(f'cannot resolve host "{host}"')
    for address in addresses:
        check_address(address, allowed, host=host)
    return addresses
