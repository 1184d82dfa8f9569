from chalicelib.idempotency import (
    EXPLICIT_TTL_SECONDS,
    FINGERPRINT_TTL_SECONDS,
    Source,
    derive_key,
)


def test_derive_key_with_header_is_explicit_for_24h() -> None:
    key = derive_key("fp:1", "/db/new", {"name": "a"}, "k-1")
    assert key.source is Source.EXPLICIT and key.ttl_seconds == EXPLICIT_TTL_SECONDS


def test_derive_key_without_header_is_fingerprint_for_120s() -> None:
    key = derive_key("fp:1", "/db/new", {"name": "a"}, None)
    assert key.source is Source.FINGERPRINT and key.ttl_seconds == FINGERPRINT_TTL_SECONDS == 120


def test_derive_key_ignores_body_field_order() -> None:
    a = derive_key("fp:1", "/db/new", {"name": "a", "x": 1}, None)
    b = derive_key("fp:1", "/db/new", {"x": 1, "name": "a"}, None)
    assert a == b


def test_derive_key_separates_scopes_and_routes() -> None:
    base = derive_key("fp:1", "/db/new", {"name": "a"}, None)
    assert derive_key("fp:2", "/db/new", {"name": "a"}, None).pk != base.pk
    assert derive_key("fp:1", "/vector/new", {"name": "a"}, None).pk != base.pk


def test_derive_key_same_header_other_scope_differs() -> None:
    assert derive_key("fp:1", "/db/new", {}, "k").pk != derive_key("fp:2", "/db/new", {}, "k").pk


def test_derive_key_same_header_other_body_keeps_key_changes_hash() -> None:
    a = derive_key("fp:1", "/db/new", {"name": "a"}, "k")
    b = derive_key("fp:1", "/db/new", {"name": "b"}, "k")
    assert a.pk == b.pk and a.body_hash != b.body_hash
