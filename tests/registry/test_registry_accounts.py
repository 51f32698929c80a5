"""The desk's accounts and promoters, as configured (no server: `test_registry_auth.py` meets the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ConfigurationError
from toolkit.registry.accounts import ACCOUNTS, ensure_accounts, promoters
from toolkit.registry.auth_app import read_promoters


def test_the_roles_are_promotion_researcher_and_a_read_only_runner() -> None:
    assert [(a.username, a.permission, a.promoter) for a in ACCOUNTS] == [
        ("promotion", "EDIT", True), ("researcher", "EDIT", False), ("runner", "READ", False)]
    assert "TOOLKIT_AUTH_RUNNER_PASSWORD" in repr(ACCOUNTS[2])


@pytest.mark.parametrize(("extra", "expected"), [
    (None, ["promotion"]),
    ("alice, bob ,", ["promotion", "alice", "bob"]),
    ("promotion,alice", ["promotion", "alice"]),
])
def test_promoters_are_the_promotion_account_and_the_named_engineers(extra: str | None,
                                                                      expected: list[str]) -> None:
    env = {} if extra is None else {"TOOLKIT_AUTH_PROMOTERS": extra}
    assert promoters(env) == expected


def test_a_promoter_name_that_would_break_the_ini_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as err:
        promoters({"TOOLKIT_AUTH_PROMOTERS": "alice,bob\n[mlflow]"})
    assert err.value.field == "TOOLKIT_AUTH_PROMOTERS" and err.value.found == "bob\n[mlflow]"


@pytest.mark.parametrize(("text", "expected"), [
    ("[mlflow]\ndefault_permission = READ\n", frozenset()),
    ("[mlflow]\n[desk_auth]\npromoters =\n", frozenset()),
    ("[desk_auth]\npromoters = promotion, alice ,bob\n", frozenset({"promotion", "alice", "bob"})),
])
def test_the_server_reads_its_promoters_from_the_desk_auth_section(tmp_path: Path, text: str,
                                                                    expected: frozenset[str]) -> None:
    ini = tmp_path / "auth.ini"
    ini.write_text(text)
    assert read_promoters(ini) == expected


def test_accounts_need_the_admin_password() -> None:
    with pytest.raises(ConfigurationError) as err:
        ensure_accounts("http://127.0.0.1:9", {"TOOLKIT_AUTH_RESEARCHER_PASSWORD": "x"})
    assert err.value.field == "MLFLOW_AUTH_ADMIN_PASSWORD"
