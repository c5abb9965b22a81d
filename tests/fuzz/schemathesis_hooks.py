"""Schemathesis hooks for the credits API (loaded through SCHEMATHESIS_HOOKS by tests/api/fuzz_api.rs).

Schemathesis's own `not_a_server_error` check counts every GraphQL error as a server
error, FORBIDDEN and NOT_FOUND included, which is what a fuzzer must get most of the
time. Our contract is narrower: no 5xx, no INTERNAL_SERVER_ERROR, no internal details.
"""

import os
from datetime import timezone

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# Whole credits up to 2^53 - 1, and some just past the range on both sides.
schemathesis.graphql.scalar(
    "Credits",
    st.one_of(
        st.integers(min_value=1, max_value=1_000),
        st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2),
    ).map(nodes.Int),
)

schemathesis.graphql.scalar(
    "DateTime",
    st.one_of(
        st.datetimes(timezones=st.just(timezone.utc)).map(lambda at: at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        st.text(max_size=30),
    ).map(nodes.String),
)

# Text that would mean internal details reached a client: the list tests/api/fuzz_api.rs
# keeps (its `LEAKS`), one per line, so the two checks never drift apart.
LEAKS = tuple(line for line in os.environ["CREDITS_LEAKS"].split("\n") if line)
assert len(LEAKS) > 10, f"CREDITS_LEAKS names too little: {LEAKS}"


@schemathesis.check
def credits_contract(ctx, response, case):
    """No 5xx, no INTERNAL_SERVER_ERROR, no SQL or panic text in the answer."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    for leak in LEAKS:
        if leak in response.text:
            raise AssertionError(f"{leak!r} in the answer: {response.text[:500]}")
