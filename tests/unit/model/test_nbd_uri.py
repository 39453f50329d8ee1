"""txgraph.model.nbd_uri: the pure parsers behind nbd filenames (QEMU 7.2 util/uri.c,
inet_parse, block/nbd.c). The live comparison with QSD is
tests/differential/test_nbd_filenames.py; these pin the parser's corner cases."""

from __future__ import annotations

import pytest

from txgraph.model.nbd_uri import (
    NbdAddressError,
    exact_filename,
    inet_parse,
    legacy_socket_options,
    nbd_parse_filename,
    parse_uri,
    query_params,
    server_address,
)


def test_uri_fields() -> None:
    uri = parse_uri("nbd://u@h%41:77/a%2fb?x=1#frag")
    assert uri is not None
    assert (uri.scheme, uri.server, uri.port, uri.path, uri.query) == (
        "nbd",
        "hA",
        77,
        "/a/b",
        "x=1",
    )
    assert parse_uri("nbd://h:65536/x") is None  # port overflow is a parse error
    assert parse_uri("nbd://h:/x") is None  # ':' needs digits
    assert parse_uri("nbd://h/x y") is None  # space is not a pchar
    empty = parse_uri("nbd+unix:///x?socket=/s")
    assert empty is not None and empty.server is None and empty.port == 0
    assert parse_uri("nbd://[::1]:5/e") is not None


def test_query_params() -> None:
    assert query_params("socket=/a%41") == [("socket", "/aA")]
    # the first '&' anywhere ends a section; ';' only when no '&' is left
    assert query_params("a=1;b=2&c=3") == [("a", "1;b=2"), ("c", "3")]
    assert query_params("a=1&b=2;c") == [("a", "1"), ("b", "2"), ("c", None)]
    assert query_params("a=1;b=2") == [("a", "1"), ("b", "2")]
    assert query_params("socket") == [("socket", None)]
    assert query_params("=v&&n=") == [("n", "")]


@pytest.mark.parametrize(
    "text, want",
    [
        ("h:1", ("h", "1")),
        (":9", ("", "9")),
        ("[::1]:5", ("::1", "5")),
        ("h:12:34", ("h", "12:34")),
        ("127.0.0.1:10,ipv4", ("127.0.0.1", "10")),
        ("h:1,ipv6=off,keep-alive=on", ("h", "1")),
    ],
)
def test_inet_parse(text: str, want: tuple[str, str]) -> None:
    assert inet_parse(text) == want


@pytest.mark.parametrize(
    "text, error",
    [
        ("h", "error parsing address 'h'"),
        ("[::1", "error parsing IPv6 address '[::1'"),
        (":", "error parsing port in address ':'"),
        ("h:1,to=x", "error parsing to= argument"),
        ("h:1,ipv4=foo", "error parsing 'ipv4' flag '=foo'"),
        ("h" * 65 + ":1", None),
    ],
)
def test_inet_parse_errors(text: str, error: str | None) -> None:
    with pytest.raises(NbdAddressError) as err:
        inet_parse(text)
    assert str(err.value) == (error or f"error parsing address '{text}'")


def test_nbd_parse_filename() -> None:
    assert nbd_parse_filename("nbd+unix:///x?socket=/s", {}) == {
        "export": "x",
        "server.type": "unix",
        "server.path": "/s",
    }
    assert nbd_parse_filename("nbd://h/e", {}) == {
        "export": "e",
        "server.type": "inet",
        "server.host": "h",
        "server.port": "10809",
    }
    assert nbd_parse_filename("nbd://[::1]:0/e", {})["server.host"] == "::1"
    assert nbd_parse_filename("nbd:unix:/s:exportname=e", {}) == {
        "export": "e",
        "server.type": "unix",
        "server.path": "/s",
    }
    assert nbd_parse_filename("nbd:h:1:exportname=", {}) == {}
    assert nbd_parse_filename("nbd:", {}) == {}
    for bad in ("nbd+unix:///x?socket", "nbd+unix://h/x?socket=/a", "nbd://", "nbd://h/x?a=b"):
        with pytest.raises(NbdAddressError, match="^No valid URL specified$"):
            nbd_parse_filename(bad, {})
    with pytest.raises(NbdAddressError, match="must start with 'nbd:'"):
        nbd_parse_filename("nbd:exportname=x", {})
    with pytest.raises(
        NbdAddressError, match="^Option 'server.path' cannot be used with a file name$"
    ):
        nbd_parse_filename("nbd:unix:/s", {"server.path": "/t"})


def test_legacy_options_and_config() -> None:
    assert legacy_socket_options({"host": "h"}) == {
        "server.type": "inet",
        "server.host": "h",
        "server.port": "10809",
    }
    with pytest.raises(NbdAddressError, match="port may not be used without host"):
        legacy_socket_options({"path": "/s", "port": "1"})
    with pytest.raises(NbdAddressError, match="NBD server address missing"):
        server_address({"export": "x"})
    assert (
        exact_filename({"server.type": "unix", "server.path": "/s", "export": "x"})
        == "nbd+unix:///x?socket=/s"
    )
    assert exact_filename({"path": "/s"}) == "nbd+unix://?socket=/s"
    assert exact_filename({"host": "h", "port": "5", "export": "e"}) == "nbd://h:5/e"
