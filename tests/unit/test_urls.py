"""Credentials in the URLs we take (issue 24, cases 3 and 4): used, and never shown.

Each setting that may carry a password is masked by the one function, ``mask_url``; messages
that libraries write about such a URL go through ``mask_secrets``.
"""

from __future__ import annotations

import base64
import socket

import pytest

from churn_assets.infra import warehouse
from churn_assets.urls import basic_auth, mask_secrets, mask_url, split_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # MLFLOW_TRACKING_URI
        ("http://alice:s3cr3tpw@127.0.0.1:5055", "http://alice:***@127.0.0.1:5055"),
        ("https://alice:p%40ss@mlflow.example/", "https://alice:***@mlflow.example/"),
        ("http://127.0.0.1:5055", "http://127.0.0.1:5055"),
        ("sqlite:////tmp/churn/mlflow/mlflow.db", "sqlite:////tmp/churn/mlflow/mlflow.db"),
        # CHURN_WAREHOUSE_URL
        ("postgresql://ana:s3cret@db:5432/wh", "postgresql://ana:***@db:5432/wh"),
        ("postgresql://postgres:@/churn?host=/tmp", "postgresql://postgres:@/churn?host=/tmp"),
        ("postgresql://ana@db/wh?sslmode=require&password=s3cret", "postgresql://ana@db/wh?sslmode=require&password=***"),
        # a password with an unencoded delimiter (libpq accepts #): masked whole all the same
        ("postgresql://ana:pa#ss99@db:5432/wh", "postgresql://ana:***@db:5432/wh"),
        ("postgresql://ana:pa/ss99@db:5432/wh", "postgresql://ana:***@db:5432/wh"),
        ("postgresql://ana:p@ss99@db:5432/wh", "postgresql://ana:***@db:5432/wh"),
    ],
)  # fmt: skip
def test_mask_url_replaces_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:s3cr3tpw@127.0.0.1/hook", "http://127.0.0.1"),
        ("https://hooks.example/services/T0/s3cret", "https://hooks.example"),
        ("http://alice:s3cr3tpw@127.0.0.1:8080/hooks/s3cret", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/hooks/s3cret", "http://[::1]:8080"),
        ("http://alice:1234#s3cret@hooks.example/x", "http://alice:***"),  # host cut short
        ("http://[::1/hooks/s3cret", "http://?"),
    ],
)
def test_mask_url_host_only_keeps_scheme_host_and_port_for_a_webhook(url: str, shown: str) -> None:
    assert mask_url(url, host_only=True) == shown


def test_mask_secrets_hides_the_password_a_library_quotes() -> None:
    # urllib's message for a webhook URL with userinfo and no port (the log line)
    assert (
        mask_secrets(
            "InvalidURL: nonnumeric port: 's3cr3tpw@127.0.0.1'",
            "http://alice:s3cr3tpw@127.0.0.1/hook",
        )
        == "InvalidURL: nonnumeric port: '***@127.0.0.1'"
    )
    # libpq quoting the piece before an unencoded "/", however short
    url = "postgresql://ana:pa/ss99@db/wh"
    text = 'invalid integer value "pa" for connection option "port" (ss99@db)'
    shown = 'invalid integer value "***" for connection option "port" (***@db)'
    assert mask_secrets(text, url) == shown
    # the URL itself, percent-encoded and decoded forms
    url = "http://alice:p%40ss99@h:1"
    assert mask_secrets(f"API request to {url}/health failed: p@ss99", url) == (
        "API request to http://alice:***@h:1/health failed: ***"
    )


def test_split_credentials_and_basic_auth_give_what_the_owner_meant() -> None:
    bare, user, password = split_credentials("http://alice:s3cr3t%40pw@127.0.0.1:8080/hook?x=1")
    assert (bare, user, password) == ("http://127.0.0.1:8080/hook?x=1", "alice", "s3cr3t@pw")
    assert split_credentials("https://hooks.example/T0/s3cret") == (
        "https://hooks.example/T0/s3cret",
        None,
        None,
    )
    assert split_credentials("http://token@h/x") == ("http://h/x", "token", None)
    header = basic_auth("alice", "s3cr3t@pw")
    assert base64.b64decode(header.removeprefix("Basic ")) == b"alice:s3cr3t@pw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "password",
    ["s3cr3tpw", "pa/ss99", "pa#ss99"],  # libpq quotes "pa" from the 2nd, connects with the 3rd
)
def test_warehouse_errors_never_show_the_password(password: str) -> None:
    url = f"postgresql://ana:{password}@127.0.0.1:{_closed_port()}/wh"
    with pytest.raises(warehouse.WarehouseError) as caught, warehouse.connect(url):
        pass
    message = str(caught.value)
    assert message.startswith("cannot connect to the warehouse at postgresql://ana:***@")
    assert "ss99" not in message and "s3cr3tpw" not in message and '"pa"' not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(warehouse.WarehouseError) as caught, warehouse.write_lock(url, "t", 0):
        pass
    assert password not in str(caught.value)


def test_a_warehouse_url_with_a_password_in_the_query_is_masked_in_errors() -> None:
    url = f"postgresql://ana@127.0.0.1:{_closed_port()}/wh?password=s3cr3tpw"
    masked = r"\?password=\*\*\*"
    with pytest.raises(warehouse.WarehouseError, match=masked) as caught, warehouse.connect(url):
        pass
    assert "s3cr3tpw" not in str(caught.value)


def test_parse_url_refuses_a_broken_password_without_quoting_it() -> None:
    with pytest.raises(warehouse.WarehouseError, match="has no usable port") as caught:
        warehouse.parse_url("postgresql://ana:pa/ss99@db:5432/wh")
    assert "ss99" not in str(caught.value) and "'pa'" not in str(caught.value)
