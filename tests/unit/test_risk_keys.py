"""Every key one risk script touches is in one Redis Cluster slot (the account's hash tag)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from app.cli import main
from app.domain.accounts import ACCOUNT_PATTERN, check_account_name
from app.storage.redis.keys import RiskKeys, idempotency

ACCOUNT_NAMES = st.from_regex(ACCOUNT_PATTERN, fullmatch=True)


@given(ACCOUNT_NAMES, st.text(min_size=1, max_size=40))
def test_an_accounts_risk_and_idempotency_keys_share_one_slot(account: str, other: str) -> None:
    keys = RiskKeys(account)
    names = [*keys.all, keys.duplicate("0" * 20), idempotency(account, other)]
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_different_accounts_spread_over_slots() -> None:
    slots = {key_slot(RiskKeys(f"acct-{n}").state.encode()) for n in range(200)}
    assert len(slots) > 150


@pytest.mark.parametrize("name", ["}", "a{b", "a}b", "", "x" * 65, "with space", "ünï"])
def test_account_names_that_would_break_the_hash_tag_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid account name"):
        check_account_name(name)


def test_the_cli_refuses_such_an_account_before_touching_anything() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--account", "a}b"])
    assert exit_.value.code == 2
