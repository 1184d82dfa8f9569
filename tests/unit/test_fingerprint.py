import ipaddress

from chalicelib.fingerprint import caller_of

PROXY = (ipaddress.ip_network("127.0.0.1/32"),)


def test_caller_ipv4_groups_by_slash_24() -> None:
    assert caller_of("203.0.113.77", None, ()).fingerprint == "203.0.113.0/24"


def test_caller_ipv6_groups_by_slash_64() -> None:
    caller = caller_of("2001:db8:1:2:3:4:5:6", None, ())
    assert caller.fingerprint == "2001:db8:1:2::/64"


def test_caller_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    assert caller_of("::ffff:198.51.100.9", None, ()).fingerprint == "198.51.100.0/24"


def test_forwarded_for_ignored_from_untrusted_peer() -> None:
    caller = caller_of("198.51.100.9", "10.9.9.9", PROXY)
    assert caller.source_ip == "198.51.100.9"


def test_forwarded_for_believed_from_trusted_proxy() -> None:
    caller = caller_of("127.0.0.1", "10.9.9.9", PROXY)
    assert caller.fingerprint == "10.9.9.0/24"


def test_forwarded_for_rightmost_untrusted_hop_wins() -> None:
    # A client may prepend anything; only the hop our proxy appended counts.
    caller = caller_of("127.0.0.1", "6.6.6.6, 10.1.1.1", PROXY)
    assert caller.source_ip == "10.1.1.1"


def test_forwarded_for_garbage_hop_stops_at_last_good_address() -> None:
    caller = caller_of("127.0.0.1", "not-an-ip", PROXY)
    assert caller.source_ip == "127.0.0.1"
