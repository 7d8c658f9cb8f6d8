"""The ``crun`` connection, validated: base URL, API key, extras and the proxy."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_crun.protocol import settings
from airflow_provider_crun.protocol.errors import ConfigError


def connection(password: str | None = "k", **extra: Any) -> settings.CrunConnectionSettings:
    return settings.connection_settings(
        conn_id="my_crun", host=None, port=None, password=password, extra=extra
    )


class TestBaseUrl:
    @pytest.mark.parametrize(
        ("host", "port", "expected"),
        [
            (None, None, "https://api.crun.ai/api/v1"),
            ("", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai", None, "https://api.crun.ai/api/v1"),
            ("api.crun.ai", None, "https://api.crun.ai/api/v1"),
            ("HTTPS://api.crun.ai", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai/api/v1", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai/api/v1/", None, "https://api.crun.ai/api/v1"),
            ("  https://api.crun.ai/  ", None, "https://api.crun.ai/api/v1"),
            ("https://proxy.example.com/crun", None, "https://proxy.example.com/crun/api/v1"),
            ("http://127.0.0.1:8089", None, "http://127.0.0.1:8089/api/v1"),
            ("http://127.5.6.7:8089/api/v1", None, "http://127.5.6.7:8089/api/v1"),
            ("http://localhost", 8089, "http://localhost:8089/api/v1"),
            ("http://[::1]:9000", None, "http://[::1]:9000/api/v1"),
            ("https://api.crun.ai:8443", 9999, "https://api.crun.ai:8443/api/v1"),
            ("https://api.crun.ai/?x=1#frag", None, "https://api.crun.ai/api/v1"),
        ],
        ids=[
            "no-host-means-public-api",
            "empty-host-means-public-api",
            "https-without-prefix",
            "bare-hostname-gets-https",
            "upper-case-scheme",
            "with-api-v1",
            "with-api-v1-trailing-slash",
            "surrounding-whitespace",
            "path-prefix-kept",
            "http-loopback-ipv4",
            "http-loopback-range",
            "http-localhost-with-port-field",
            "http-loopback-ipv6",
            "port-in-host-wins",
            "query-and-fragment-dropped",
        ],
    )
    def test_normalizes(self, host: str | None, port: int | None, expected: str) -> None:
        assert settings.normalize_base_url(host, port) == expected

    @pytest.mark.parametrize(
        ("host", "fragment"),
        [
            ("http://api.crun.ai", "unencrypted"),
            ("http://10.0.0.5:8089", "unencrypted"),
            ("http://127.0.0.1.evil.example", "unencrypted"),
            ("http://localhost.evil.example", "unencrypted"),
            ("ftp://api.crun.ai", r"not an http\(s\) URL"),
            ("https://", r"not an http\(s\) URL"),
        ],
        ids=[
            "http-public-host",
            "http-private-ip",
            "http-loopback-lookalike",
            "http-localhost-lookalike",
            "ftp-scheme",
            "no-hostname",
        ],
    )
    def test_refuses(self, host: str, fragment: str) -> None:
        with pytest.raises(ConfigError, match=fragment):
            settings.normalize_base_url(host)

    @pytest.mark.parametrize(
        ("host", "port"),
        [("http://[::1", None), ("https://api.crun.ai:abc", 443), ("https://api.crun.ai:abc", None)],
        ids=["unclosed-ipv6", "port-not-a-number-with-port-field", "port-not-a-number"],
    )
    def test_unparsable_host_is_a_config_error(self, host: str, port: int | None) -> None:
        with pytest.raises(ConfigError, match="is not a valid URL"):
            settings.normalize_base_url(host, port)


class TestConnectionSettings:
    def test_missing_key_names_connection_and_field(self) -> None:
        with pytest.raises(ConfigError, match=r"'my_crun' has no API key.*password field"):
            connection(password="")

    def test_none_key_is_missing(self) -> None:
        with pytest.raises(ConfigError, match="no API key"):
            connection(password=None)

    def test_defaults(self) -> None:
        assert connection() == settings.CrunConnectionSettings(
            base_url="https://api.crun.ai/api/v1",
            api_key="k",
            timeout=settings.DEFAULT_TIMEOUT,
            max_retries=settings.DEFAULT_MAX_RETRIES,
            proxy=None,
        )

    def test_host_and_port_are_normalized(self) -> None:
        read = settings.connection_settings(
            conn_id="c", host="http://localhost", port=8089, password="k", extra={}
        )
        assert read.base_url == "http://localhost:8089/api/v1"

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            ({"timeout": "12.5", "max_retries": 2}, (12.5, 2)),
            ({"timeout": 1, "max_retries": "0"}, (1.0, 0)),
            ({"timeout": "", "max_retries": None}, (settings.DEFAULT_TIMEOUT, settings.DEFAULT_MAX_RETRIES)),
            ({"max_retries": 2.9}, (settings.DEFAULT_TIMEOUT, 2)),
        ],
        ids=["text-and-number", "minimums", "empty-means-default", "fractional-retries-truncated"],
    )
    def test_extras(self, extra: dict[str, Any], expected: tuple[float, int]) -> None:
        read = connection(**extra)
        assert (read.timeout, read.max_retries) == expected
        assert type(read.max_retries) is int

    @pytest.mark.parametrize(
        ("extra", "fragment"),
        [
            ({"timeout": "soon"}, "'timeout' must be a number, got 'soon'"),
            ({"timeout": [5]}, "'timeout' must be a number"),
            ({"timeout": 0.5}, "'timeout' must be >= 1"),
            ({"max_retries": -1}, "'max_retries' must be >= 0"),
            ({"max_retries": "many"}, "'max_retries' must be a number"),
        ],
        ids=[
            "timeout-not-a-number",
            "timeout-a-list",
            "timeout-below-a-second",
            "negative-retries",
            "retries-text",
        ],
    )
    def test_bad_extras(self, extra: dict[str, Any], fragment: str) -> None:
        with pytest.raises(ConfigError, match=fragment):
            connection(**extra)

    @pytest.mark.parametrize(
        "extra",
        [{"timeout": "nan"}, {"timeout": "inf"}, {"max_retries": "inf"}, {"max_retries": "nan"}],
        ids=["timeout-nan", "timeout-infinite", "retries-infinite", "retries-nan"],
    )
    def test_non_finite_extras_are_config_errors(self, extra: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="must be a number"):
            connection(**extra)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(None, None), ("", None), ("12.5", 12.5), (0, 0.0)],
        ids=["absent-means-no-check", "empty-means-no-check", "text", "zero"],
    )
    def test_min_balance(self, value: object, expected: float | None) -> None:
        assert connection(min_balance=value).min_balance == expected

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            (-1, "'min_balance' must be >= 0"),
            ("lots", "'min_balance' must be a number"),
            ("inf", "must be a number"),
        ],
        ids=["negative", "text", "infinite"],
    )
    def test_bad_min_balance(self, value: object, fragment: str) -> None:
        with pytest.raises(ConfigError, match=fragment):
            connection(min_balance=value)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(None, None), ("", None), ("/etc/ssl/corp-ca.pem", "/etc/ssl/corp-ca.pem")],
        ids=["absent-means-default-store", "empty-means-default-store", "path"],
    )
    def test_ca_bundle(self, value: str | None, expected: str | None) -> None:
        assert connection(ca_bundle=value).ca_bundle == expected

    def test_repr_hides_key_and_proxy(self) -> None:
        read = connection(password="sk-very-secret", proxy="http://user:pw-secret@proxy.example.com:3128")
        assert "sk-very-secret" not in repr(read)
        assert "pw-secret" not in repr(read)


class TestProxyExtra:
    @pytest.mark.parametrize(
        ("proxy", "expected"),
        [
            (None, None),
            ("", None),
            ("http://proxy.example.com:3128", "http://proxy.example.com:3128"),
            ("https://user:pw@proxy.example.com", "https://user:pw@proxy.example.com"),
        ],
        ids=[
            "absent-means-environment",
            "empty-means-environment",
            "http-proxy",
            "https-proxy-with-credentials",
        ],
    )
    def test_accepted(self, proxy: str | None, expected: str | None) -> None:
        assert connection(proxy=proxy).proxy == expected

    @pytest.mark.parametrize(
        "proxy",
        [
            "socks5://user:pw-secret@proxy.example.com:1080",
            "proxy.example.com:3128",
            "http://",
            "ftp://pw-secret@x",
        ],
        ids=["socks", "no-scheme", "no-host", "ftp"],
    )
    def test_refused_without_echoing_the_value(self, proxy: str) -> None:
        with pytest.raises(ConfigError, match="'proxy' must be an http") as raised:
            connection(proxy=proxy)
        assert "pw-secret" not in str(raised.value)

    def test_unparsable_proxy_is_a_config_error_without_echoing_it(self) -> None:
        with pytest.raises(ConfigError, match="'proxy' must be an http") as raised:
            connection(proxy="http://user:pw-secret@[proxy")
        assert "pw-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("key sk-123 echoed", "key *** echoed"),
        ({"message": "bad sk-123", "code": 401}, {"message": "bad ***", "code": 401}),
        (["sk-123", {"nested": ["x sk-123"]}], ["***", {"nested": ["x ***"]}]),
        (401, 401),
    ],
    ids=["text", "dict", "nested list", "number untouched"],
)
def test_mask_secret(value: object, masked: object) -> None:
    assert settings.mask_secret(value, "sk-123") == masked


def test_mask_secret_without_a_secret_returns_the_value_itself() -> None:
    value = {"message": "anything"}
    assert settings.mask_secret(value, "") is value
