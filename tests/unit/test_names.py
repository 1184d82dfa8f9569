import pytest

from chalicelib import errors
from chalicelib.routes.requests import resource_name


@pytest.mark.parametrize("name", ["a", "prod-db", "sessions cache", "A_1-b c", "9" * 64])
def test_resource_name_accepts_valid(name: str) -> None:
    assert resource_name(name) == name


@pytest.mark.parametrize("value", [None, ""])
def test_resource_name_missing_is_name_required(value: object) -> None:
    with pytest.raises(errors.NameRequiredError) as exc:
        resource_name(value)
    assert exc.value.status == 400 and exc.value.code == "name_required"


@pytest.mark.parametrize(
    "value",
    [
        "x" * 65,
        "-lead",
        "_lead",
        " lead",
        "bad/char",
        "bad.dot",
        "ünï",
        "tab\tname",
        "nl\n",
        42,
        ["a"],
    ],
)
def test_resource_name_malformed_is_invalid_name(value: object) -> None:
    with pytest.raises(errors.InvalidNameError) as exc:
        resource_name(value)
    assert exc.value.status == 400 and exc.value.code == "invalid_name"
