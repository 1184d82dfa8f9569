import json

import pytest

from chalicelib.config import Settings
from chalicelib.errors import ConfigError
from chalicelib.models import Kind
from chalicelib.tiers import Tier, default_tiers, lowest_deploying_tier
from devstack.stack import get_profile

SECRET = "j" * 40


def get_tier(name: str) -> Tier:
    return default_tiers()[name]


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
    for tier in default_tiers().values():
        assert set(tier.kinds) == set(Kind), tier.name


def settings_with(overrides: object) -> Settings:
    env = {"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_PLANS_OVERRIDES": json.dumps(overrides)}
    return Settings.from_env(env)


def test_default_table_deploys_from_hobby_only() -> None:
    assert get_tier("free").deploys.apps == 0
    assert lowest_deploying_tier(default_tiers()) == get_tier("hobby")


def test_override_merges_over_the_tier_and_keeps_the_rest() -> None:
    tiers = settings_with({"free": {"deploys": {"apps": 1}, "ttl_hours": None}}).tiers
    assert tiers["free"].deploys.apps == 1 and tiers["free"].ttl_hours is None
    assert tiers["free"].deploys.memory_mb == get_tier("free").deploys.memory_mb
    assert tiers["free"].kinds == get_tier("free").kinds
    assert tiers["hobby"] == get_tier("hobby")
    assert lowest_deploying_tier(tiers) == tiers["free"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"gold": {}}, "unknown tier 'gold'"),
        ({"free": {"deploys": {"appz": 1}}}, "free.deploys: unknown key 'appz'"),
        ({"free": {"kinds": {"mysql": {}}}}, "free.kinds: unknown key 'mysql'"),
        ({"free": {"deploys": {"apps": "1"}}}, "free.deploys.apps must be a whole number"),
        ({"free": {"deploys": {"apps": True}}}, "free.deploys.apps must be a whole number"),
        ({"free": {"kinds": {"redis": {"connections": -1}}}}, "connections must be a whole"),
        ({"free": {"deploys": {"apps": None}}}, "free.deploys.apps must be a whole number"),
        ({"free": {"self_serve": "yes"}}, "free.self_serve must be true or false"),
        ({"free": 1}, "free must be an object"),
        (["free"], "must be a JSON object"),
    ],
)
def test_bad_override_fails_at_load_naming_the_entry(overrides: object, says: str) -> None:
    with pytest.raises(ConfigError, match="INSTANODE_PLANS_OVERRIDES") as raised:
        settings_with(overrides)
    assert says in str(raised.value)


def test_make_run_lets_free_teams_deploy_and_tests_keep_the_default_table() -> None:
    dev = Settings.from_env(
        {
            "INSTANODE_JWT_SECRET": SECRET,
            "INSTANODE_PLANS_OVERRIDES": get_profile("dev").plans_overrides,
        }
    )
    assert dev.tiers["free"].deploys.apps == 1
    assert json.loads(get_profile("test+300").plans_overrides) == {}
