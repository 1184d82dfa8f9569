from chalicelib.models import Kind
from chalicelib.tiers import all_tiers, get_tier


def test_anonymous_tier_matches_spec_limits() -> None:
    anon = get_tier("anonymous")
    pg = anon.limits(Kind.POSTGRES)
    assert (pg.storage_mb, pg.connections, pg.max_resources) == (10, 2, 1)
    assert anon.ttl_hours == 24 and anon.daily_provisions == 5


def test_paid_tiers_have_no_ttl_and_spec_caps() -> None:
    assert get_tier("hobby").ttl_hours is None and get_tier("pro").ttl_hours is None
    assert get_tier("hobby").limits(Kind.POSTGRES).storage_mb == 1024
    assert get_tier("hobby").limits(Kind.VECTOR).max_resources == 2
    assert get_tier("pro").limits(Kind.POSTGRES).max_resources == 5


def test_every_tier_covers_every_kind() -> None:
    for tier in all_tiers().values():
        assert set(tier.kinds) == set(Kind), tier.name
