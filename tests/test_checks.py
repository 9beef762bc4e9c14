"""checks.py: which URLs config validation takes, redaction, and config check's warnings."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from token_worker.checks import broker_url_problem, redact_url, redis_url_problem
from token_worker.cli import cli
from token_worker.config import config_warnings, parse_config
from token_worker.exceptions import ConfigError
from token_worker.store import connect_redis, describe_redis

from .support import CLIENT_ID, config_data, config_problems, write_config

CLIENT = {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}
# what `openssl rand -base64` makes: every character URLs reserve, around distinctive pieces
PASSWORD = "Kq7Wz/Rt4Xp+Mn2=Lb9?Hv3#Jc6@Ds1:Fy8"
PIECES = ("Kq7Wz", "Rt4Xp", "Mn2", "Lb9", "Hv3", "Jc6", "Ds1", "Fy8")


base = config_data
problems_of = config_problems


pytestmark = pytest.mark.usefixtures("no_env_overrides")


def assert_hidden(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, f"{piece} of the password shown"


# -- item 1: the token endpoint is https:// except on loopback ------------------------------

@pytest.mark.parametrize("url", [
    "https://secure.stitch.money/connect/token", "http://127.0.0.1:8080/connect/token",
    "http://127.9.8.7/t", "http://localhost:1/t", "http://[::1]:9/t", "HTTPS://Example.com/t",
])
def test_https_or_loopback_token_urls_are_taken(url: str) -> None:
    assert parse_config(base(stitch={"token_url": url})).stitch.token_url == url


@pytest.mark.parametrize("url", [
    "http://secure.stitch.money/connect/token", "http://127.0.0.1.evil.example/t",
    "http://10.0.0.1/t", "http://localhost.evil.example/t", "ftp://127.0.0.1/t",
    "https://user:pw@secure.stitch.money/t", "https://h:99999/t", "secure.stitch.money", "",
])
def test_other_token_urls_are_refused_naming_the_key(url: str) -> None:
    problems = problems_of(base(stitch={"token_url": url}))
    assert len(problems) == 1 and problems[0].startswith("stitch.token_url: "), problems
    assert not url or url not in problems[0]


def test_config_check_refuses_a_plain_http_token_url(tmp_path: Path,
                                                     secret_env: str) -> None:
    path = write_config(tmp_path / "tw.toml", redis_url="redis://127.0.0.1:1/0",
                        token_url="http://stitch.example/connect/token")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid config: stitch.token_url: must be https://")
    assert "stitch.example" not in result.output


# -- item 3: a URL cannot weaken TLS -------------------------------------------------------

@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=none", "ssl_check_hostname=false", "ssl_ca_certs=/tmp/x.pem",
    "ssl_certfile=/c", "ssl_keyfile=/k", "ssl_ca_path=/d", "ssl_ca_data=x",
    "ssl_min_version=TLSv1", "ssl_ciphers=NULL", "db=0&SSL_Anything=1",
])
def test_tls_query_parameters_are_refused_in_the_store_url(query: str) -> None:
    problems = problems_of(base(redis={"url": f"rediss://127.0.0.1:6380/0?{query}"}))
    assert len(problems) == 1 and problems[0].startswith("redis.url: must not carry ssl_*")
    assert query.split("=")[1] not in problems[0]


@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=none", "ssl_cert_reqs=CERT_OPTIONAL", "ssl_check_hostname=false",
    "ssl_ca_path=/d", "ssl_ca_data=x", "ssl_min_version=TLSv1", "ssl_ciphers=NULL",
    "db=0&SSL_Anything=1",
])
def test_tls_weakening_query_parameters_are_refused_in_the_broker_url(query: str) -> None:
    problems = problems_of(base(celery={"broker_url": f"rediss://127.0.0.1:6380/0?{query}"}))
    assert len(problems) == 1
    assert problems[0].startswith("celery.broker_url: must not carry query parameters that "
                                  "weaken TLS")
    assert query.split("=")[1] not in problems[0]


def test_a_tls_broker_url_may_say_how_to_verify() -> None:
    # kombu insists on ssl_cert_reqs in a rediss:// broker URL; stricter settings are fine
    url = ("rediss://127.0.0.1:6380/1?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
           "&ssl_certfile=/c&ssl_keyfile=/k&ssl_check_hostname=true")
    assert parse_config(base(celery={"broker_url": url})).celery.broker_url == url


def test_config_check_refuses_ssl_cert_reqs_none_with_exit_2(tmp_path: Path,
                                                            secret_env: str) -> None:
    path = write_config(tmp_path / "tw.toml", token_url="http://127.0.0.1:1/t",
                        redis_url="rediss://127.0.0.1:6380/0?ssl_cert_reqs=none")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert "redis.url: must not carry ssl_*" in result.stderr
    assert "Traceback" not in result.output


def test_tls_files_on_a_plain_url_are_a_warning() -> None:
    config = parse_config(base(redis={"url": "redis://127.0.0.1:6379/0",
                                      "tls_ca_file": "/etc/ca.pem"}))
    assert ("redis.tls_ca_file: set, but redis.url is not rediss://, so it is not used"
            in config_warnings(config))
    tls = parse_config(base(redis={"url": "rediss://127.0.0.1:6380/0", "tls_ca_file": "/x"}))
    assert not [w for w in config_warnings(tls) if w.startswith("redis.")]


# -- item 5: URLs that do not parse, and passwords with any character ----------------------

@pytest.mark.parametrize(("url", "expected"), [
    (f"redis://:{PASSWORD}@10.0.0.1:6379/0", "cannot be parsed"),
    ("redis://:ab/cd@10.0.0.1:6379/0", "cannot be parsed"),
    ("redis://:12/cd@10.0.0.1:6379/0", "has an @ after the host"),
    ("redis://user:12#b@10.0.0.1/0", "has an @ after the host"),
    ("redis://h:99999/0", "cannot be parsed"),
    ("redis://h:0/0", "port must be"),
    ("redis://[::1/0", "cannot be parsed"),
    ("redis://h/zero", "path must be /DB"),
    ("redis://h/0?db=x", "cannot parse"),
    ("http://h/0", "unsupported scheme"),
    ("h:6379", "is not a URL"),
    ("redis://h/0 x", "spaces or control characters"),
    ("redis://h/0\n", "spaces or control characters"),
    ("unix://", "socket path"),
    ("redis+sentinel://h:26379/", "names no service"),
    ("redis+sentinel://h:26379", "names no service"),
    ("redis+sentinel://h:26379/my master", "spaces or control characters"),
    ("redis+sentinel://h:26379/m/x", "path must be /service_name or /service_name/DB"),
    ("redis+sentinel://h:26379/m?ssl_cert_reqs=none", "must not carry a query"),
    (f"redis+sentinel://:{PASSWORD}@h/m", "percent-encode"),
    ("redis+sentinel://h:70000/m", "bad port"),
    ("redis+sentinel:///m", "names no host"),
    ("redis+unknown://h/", "unsupported scheme"),
])
def test_unusable_redis_urls_are_one_line_naming_the_key(url: str, expected: str) -> None:
    (problem,) = problems_of(base(redis={"url": url}))
    assert problem.startswith("redis.url: ") and expected in problem, problem
    assert_hidden(problem)
    assert "\n" not in problem


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://h", "redis://h/", "rediss://u:p%2Fq@h:6380/3",
    "unix:///run/redis.sock?db=1", "unix://user:pw@/run/redis.sock", "redis://[::1]:6379/0",
    "redis://h:6379/0?socket_keepalive=true&client_name=tw",
    "redis+sentinel://h1:26379,h2:26380,[::1]:26381/mymaster",
    "rediss+sentinel://u:p%2Fq%40r@h1,h2/mymaster/3", "redis+sentinel://:pw@h/m/0",
])
def test_usable_redis_urls_are_taken(url: str) -> None:
    assert parse_config(base(redis={"url": url})).redis.url == url


@pytest.mark.parametrize("url", ["redis+cluster://h1:7000,h2:7001,h3:7002/",
                                 "rediss+cluster://u:p@h1:7000", "redis+cluster://h/0"])
def test_cluster_urls_are_taken_with_a_broker_of_their_own(url: str) -> None:
    config = parse_config(base(redis={"url": url}, celery={"broker_url": "amqp://mq//"}))
    assert config.redis.url == url
    (problem,) = problems_of(base(redis={"url": url}))
    assert problem.startswith("celery.broker_url: must be set when redis.url is a cluster")


@pytest.mark.parametrize(("url", "expected"), [
    ("rediss+cluster://h:7000/3", "a cluster has database 0 only"),
    ("redis+cluster://h:7000,h;x:7001/", "cannot be parsed"),
    ("redis+cluster://", "names no host"),
])
def test_unusable_cluster_urls_are_one_line_naming_the_key(url: str, expected: str) -> None:
    (problem,) = problems_of(base(redis={"url": url}, celery={"broker_url": "amqp://mq//"}))
    assert problem.startswith("redis.url: ") and expected in problem, problem


@pytest.mark.parametrize("url", [
    "amqp://guest:guest@127.0.0.1:5672//", "amqps://u:p@mq:5671/vhost", "pyamqp://mq//",
    "redis://h:6379/1", "rediss://h:6380/1", "sentinel://:p@h1:26379;sentinel://:p@h2:26379",
    "memory://", "sqla+postgresql://u:p@db/celery", "filesystem://", "redis+socket:///r.sock",
])
def test_celery_broker_schemes_taken_before_are_still_taken(url: str) -> None:
    assert parse_config(base(celery={"broker_url": url})).broker_url == url


def test_a_cluster_broker_is_refused_clearly() -> None:
    assert broker_url_problem("redis+cluster://h:7000/") == \
        "redis+cluster:// is refused: Celery's Redis transport has no cluster mode"
    assert broker_url_problem("gopher://h/") is not None
    assert broker_url_problem(f"amqp://u:{PASSWORD}@mq//") is not None


def test_env_override_problems_say_where_the_url_came_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", f"redis://:{PASSWORD}@h:6379/0")
    (problem,) = problems_of(base())
    assert problem.startswith("redis.url (from $TOKEN_WORKER_REDIS_URL): cannot be parsed")


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
    (f"rediss://refresher:{PASSWORD}@h:6380/0", "rediss://refresher:***@h:6380/0"),
    (f"unix://:{PASSWORD}@/run/redis.sock", "unix://:***@/run/redis.sock"),
    (f"amqp://tw:{PASSWORD}@mq:5672//", "amqp://tw:***@mq:5672//"),
    (f"redis+sentinel://:{PASSWORD}@h1:26379,h2:26379/m", "redis+sentinel://:***@h1:26379,h2:26379/m"),
    (f"redis+cluster://u:{PASSWORD}@h1:7000,h2:7000/", "redis+cluster://u:***@h1:7000,h2:7000/"),
    (f"sentinel://:{PASSWORD}@h1:26379;sentinel://:{PASSWORD}@h2:26379", "sentinel://:***@h2:26379"),
    ("redis://h:6379/0?password=Kq7Wz/Rt4Xp", "redis://h:6379/0?password=***"),
    ("redis://h/0?sentinel_password=Kq7Wz#Rt4Xp&db=1", "redis://h/0?sentinel_password=***&db=1"),
    # an @ in a query value or a ?password= in the user info: both readings are hidden
    (f"redis://h:6379/0?password={PASSWORD}", "redis://h:***"),
    ("redis://:a?password=Kq7Wz@h:6379/0", "redis://:***"),
    (f"redis://{PASSWORD}@h/0", "redis://***@h/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redact_url_hides_everything_up_to_the_last_at(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert_hidden(redact_url(url))


def test_a_password_with_a_slash_never_shows_in_config_check_or_status(
        tmp_path: Path, secret_env: str) -> None:
    raw = write_config(tmp_path / "raw.toml", token_url="http://127.0.0.1:1/t",
                       redis_url=f"redis://:{PASSWORD}@127.0.0.1:1/0",
                       broker_url="redis://127.0.0.1:1/1")
    for command in (["config", "check"], ["status"], ["status", "--json"], ["check"]):
        result = CliRunner().invoke(cli, ["--config", str(raw), *command])
        assert result.exit_code == 2, (command, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.output
        assert_hidden(result.output)
    encoded = PASSWORD.replace("%", "%25").replace("/", "%2F").replace("+", "%2B") \
        .replace("=", "%3D").replace("?", "%3F").replace("#", "%23").replace("@", "%40") \
        .replace(":", "%3A")
    good = write_config(tmp_path / "good.toml", token_url="http://127.0.0.1:1/t",
                        redis_url=f"redis://:{encoded}@127.0.0.1:1/0")
    result = CliRunner().invoke(cli, ["--config", str(good), "config", "check"])
    assert result.exit_code == 0, result.output
    assert "redis redis://:***@127.0.0.1:1/0" in result.stdout
    assert_hidden(result.output)
    client = connect_redis(f"redis://:{encoded}@127.0.0.1:1/0")
    assert client.connection_pool.connection_kwargs["password"] == PASSWORD  # still usable
    assert describe_redis(client) == "127.0.0.1:1"


def test_connect_redis_refuses_an_unparseable_url_without_quoting_it() -> None:
    with pytest.raises(ConfigError) as info:
        connect_redis(f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    (problem,) = info.value.problems
    assert problem.startswith("redis url: cannot be parsed")
    assert_hidden(f"{info.value} {info.value!r} {info.value.__cause__!r}")


# -- hostile strings: redaction and description never raise ---------------------------------

ALPHABET = "@:/?#[]%;,&=+ \x00\n\r\t\x1b\u2028abcXYZ019.-Ж"
ODD = ["", "@", "@@", "//", "://", "NaN", "nan", "inf", "-0", "redis://", "redis://@",
       "redis://:@", "redis://@@@/", "redis://[", "redis://]@[", "rediss://\x00@\n",
       "unix://@", "a" * 10000, "Ж://Ж@Ж", "redis://h:NaN/0", "redis://h:-1/0",
       "redis://h/0?password", "redis://h/0?&&&=", "redis://\u2028:x@h"]


def odd_strings(count: int = 3000) -> list[str]:
    rng = random.Random(10)
    out = list(ODD)
    for _ in range(count):
        body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        out.append(rng.choice(["", "redis://", "rediss://", "unix://", "amqp://", "x:"]) + body)
    return out


def test_redact_url_and_url_checks_never_raise_nor_quote() -> None:
    for text in odd_strings():
        shown = redact_url(text)
        assert isinstance(shown, str) and shown.isprintable()
        for problem in (redis_url_problem(text), broker_url_problem(text)):
            assert problem is None or "Ж" not in problem


def test_redact_url_hides_any_password_whatever_it_holds() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        # Q marks the password: no user, host or scheme here holds one
        password = "".join(rng.choice("Q:/?#@%;&=+ ") for _ in range(rng.randint(1, 30)))
        url = f"{rng.choice(['redis', 'rediss', 'amqp', 'unix'])}://{rng.choice(['', 'u'])}:" \
              f"Q{password}@host:6379/0"
        assert "Q" not in redact_url(url), url


def test_config_validation_of_odd_urls_is_a_config_error_or_a_config() -> None:
    for text in odd_strings(400):
        try:
            parse_config(base(redis={"url": text}, celery={"broker_url": text}))
        except ConfigError as exc:
            assert all("Ж" not in p and "\n" not in p for p in exc.problems)


def test_describe_redis_never_raises() -> None:
    clients: list[Any] = [redis.Redis(host="\x00\n@", port=-1), redis.Redis(unix_socket_path="@"),
                          redis.Redis(host="", port=0), object(), None]
    for text in odd_strings(300):
        try:
            clients.append(connect_redis(text))
        except ConfigError:
            pass
    for client in clients:
        shown = describe_redis(client)
        assert isinstance(shown, str) and shown.isprintable()


# -- item 13: every number is finite and bounded ------------------------------------------

@pytest.mark.parametrize(("section", "key", "value"), [
    ("refresh", "interval_seconds", 1e-9), ("refresh", "interval_seconds", 0.05),
    ("refresh", "interval_seconds", 3601), ("refresh", "interval_seconds", float("nan")),
    ("stitch", "timeout_seconds", float("inf")), ("stitch", "timeout_seconds", float("nan")),
    ("stitch", "timeout_seconds", -1), ("stitch", "timeout_seconds", 301),
    ("stitch", "timeout_seconds", 1e308), ("stitch", "timeout_seconds", True),
    ("refresh", "margin_seconds", float("inf")), ("refresh", "margin_seconds", 604801),
    ("refresh", "margin_seconds", float("-inf")), ("refresh", "margin_seconds", "600"),
    ("refresh", "retries", -1), ("refresh", "retries", 11), ("refresh", "retries", 1.5),
    ("refresh", "retries", True),
    ("redis", "socket_timeout_seconds", 0), ("redis", "socket_timeout_seconds", float("inf")),
    ("redis", "socket_timeout_seconds", float("nan")), ("redis", "socket_timeout_seconds", -1),
    ("metrics", "port", 70000), ("metrics", "port", True),
])
def test_numeric_settings_are_finite_and_bounded(section: str, key: str, value: Any) -> None:
    changes: dict[str, Any] = {section: {key: value}}
    if section == "redis":
        changes["redis"]["url"] = "redis://h/0"
    problems = problems_of(base(**changes))
    assert len(problems) == 1 and problems[0].startswith(f"{section}.{key}: "), problems


@pytest.mark.parametrize("margin", [float("inf"), float("nan"), 604801, -1])
def test_a_profile_margin_is_finite_and_bounded(margin: float) -> None:
    problems = problems_of(base(profiles={"p": {"scopes": ["client_refund"],
                                                "margin_seconds": margin}}))
    assert len(problems) == 1 and problems[0].startswith("profiles.p.margin_seconds: ")


def test_bounds_keep_ordinary_values() -> None:
    config = parse_config(base(refresh={"interval_seconds": 0.1, "margin_seconds": 604800,
                                        "retries": 10},
                               stitch={"timeout_seconds": 300},
                               redis={"url": "redis://h/0", "socket_timeout_seconds": 0.5}))
    assert (config.refresh.interval_seconds, config.stitch.timeout_seconds) == (0.1, 300)
    assert parse_config(base(refresh={"margin_seconds": 0})).refresh.margin_seconds == 0


def test_names_with_a_trailing_newline_are_refused() -> None:
    problems = problems_of(base(profiles={"payments\n": {"scopes": ["client_refund"]}},
                                redis={"url": "redis://h/0", "prefix": "stitch\n"}))
    assert any(p.startswith("profiles.'payments\\n': name must match") for p in problems)
    assert any(p.startswith("redis.prefix: ") for p in problems)
    assert all("\n" not in p for p in problems)


# -- item 10: a margin with no room for a retry after a killed worker ------------------------

def test_config_check_warns_when_the_margin_leaves_no_room_for_a_retry() -> None:
    config = parse_config(base(stitch={"timeout_seconds": 10},
                               refresh={"margin_seconds": 60, "interval_seconds": 30},
                               profiles={"payments": {"scopes": ["client_paymentrequest"]},
                                         "refunds": {"scopes": ["client_refund"],
                                                     "margin_seconds": 900}}))
    ttl = config.lock_ttl_seconds
    assert ttl == 46  # 3 calls of 10 s, their backoff, 10 s spare
    (warning,) = config_warnings(config)
    assert warning == ("profiles.payments: margin 60s leaves no room for one retry after a "
                       "worker is killed mid-call: it needs lock ttl 46s + interval 30s + "
                       "timeout 10s = 86s")


def test_a_margin_with_room_for_a_retry_gives_no_warning() -> None:
    config = parse_config(base(stitch={"timeout_seconds": 10},
                               refresh={"margin_seconds": 86, "interval_seconds": 30}))
    assert config_warnings(config) == []


def test_a_fractional_interval_warns_for_schedulers_that_store_whole_seconds() -> None:
    # django-celery-beat's interval column is an integer: 0.5 s would become 0 (a flood)
    config = parse_config(base(stitch={"timeout_seconds": 1},
                               refresh={"margin_seconds": 86, "interval_seconds": 2.5}))
    (warning,) = config_warnings(config)
    assert warning.startswith("refresh.interval_seconds: not a whole number")
    assert config_warnings(parse_config(base(refresh={"margin_seconds": 86,
                                                      "interval_seconds": 30.0}))) == []
