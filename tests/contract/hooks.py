"""schemathesis hooks of the contract runs (loaded through SCHEMATHESIS_HOOKS).

The test stack trusts X-Forwarded-For from 127.0.0.1 (devstack/stack.py), so every request names
a client network of its own: anonymous provisions never use up one network's daily five."""

from typing import Any

import schemathesis

from tests.conftest import fresh_ip


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: Any) -> None:
    case.headers = {**(case.headers or {}), "X-Forwarded-For": fresh_ip()}
