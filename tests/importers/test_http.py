"""The importers' JSON API client (importers.http) against the fake APIs:
timeouts, retries with backoff, rate limits, tokens, bad answers, secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import time_machine
from django.core.cache import cache

from importers import http
from importers.sources.base import FetchContext, SourceError, SourceWideError
from tests.fixtures.processes import free_port

# A fixed clock for the client (Unix seconds), so waits computed from it are exact.
CLOCK = 1_795_329_760.0


def _apteligent(fake, sleeps, **options):
    ctx = options.pop("ctx", None) or fake.context(
        token_cache_key=options.pop("token_cache_key", "")
    )
    options.setdefault("rand", lambda: 1.0)  # the longest backoff: deterministic
    return http.apteligent_client(ctx, sleep=sleeps, **options)


def _pingdom(fake, sleeps, **options):
    options.setdefault("rand", lambda: 1.0)
    options.setdefault("clock", lambda: CLOCK)
    return http.pingdom_client(fake.context(), sleep=sleeps, **options)


# --- Tokens ---------------------------------------------------------------------


def test_it_gets_a_token_by_the_password_grant(fake_apteligent, sleeps):
    with _apteligent(fake_apteligent, sleeps) as api:
        apps = api.get("/apps", params={"attributes": "appName"})
        api.get("/apps", params={"attributes": "appName"})

    assert set(apps) == set(fake_apteligent.apps)
    (token_call,) = fake_apteligent.calls("/token")
    assert token_call.form == {
        "grant_type": "password",
        "username": fake_apteligent.username,
        "password": fake_apteligent.password,
    }
    # the fake checked the basic auth (client_id, ""); the token is reused
    assert [c.headers["authorization"] for c in fake_apteligent.calls("/apps")] == [
        f"Bearer {fake_apteligent.tokens[0]}"
    ] * 2
    assert api.ctx.calls == 3


@pytest.mark.usefixtures("locmem_cache")
def test_it_caches_the_token_until_shortly_before_it_expires(fake_apteligent, sleeps):
    start = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:1") as api:
            api.get("/apps", params={"attributes": "appName"})

        assert cache.get("tok:1") == {
            "access_token": fake_apteligent.tokens[0],
            "expires_at": start.timestamp() + 3600,
        }
        # another worker, 58 minutes later: the cached token
        traveller.shift(timedelta(minutes=58))
        with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:1") as api:
            api.get("/apps", params={"attributes": "appName"})
        assert len(fake_apteligent.tokens) == 1

        # within the last minute of its life: dropped by the cache, a new one
        traveller.shift(timedelta(minutes=1, seconds=1))
        assert cache.get("tok:1") is None
        with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:1") as api:
            api.get("/apps", params={"attributes": "appName"})

    assert len(fake_apteligent.tokens) == 2
    assert fake_apteligent.calls("/apps")[-1].headers["authorization"] == (
        f"Bearer {fake_apteligent.tokens[1]}"
    )


@pytest.mark.usefixtures("locmem_cache")
def test_it_ignores_a_cached_token_past_its_expiry(fake_apteligent, sleeps):
    # a cache backend may keep an entry a little past its timeout
    cache.set("tok:1", {"access_token": "stale", "expires_at": CLOCK + 30})

    with _apteligent(
        fake_apteligent, sleeps, token_cache_key="tok:1", clock=lambda: CLOCK
    ) as api:
        api.get("/apps", params={"attributes": "appName"})

    assert len(fake_apteligent.tokens) == 1
    assert cache.get("tok:1")["access_token"] == fake_apteligent.tokens[0]


@pytest.mark.django_db
def test_it_shares_the_token_through_the_database_cache(fake_apteligent, sleeps):
    for _ in range(2):
        with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:db") as api:
            api.get("/apps", params={"attributes": "appName"})

    assert len(fake_apteligent.tokens) == 1
    assert cache.get("tok:db")["access_token"] == fake_apteligent.tokens[0]


@pytest.mark.usefixtures("locmem_cache")
def test_it_renews_the_token_once_after_a_401(fake_apteligent, sleeps):
    with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:1") as api:
        api.get("/apps", params={"attributes": "appName"})
        fake_apteligent.revoke_tokens()
        apps = api.get("/apps", params={"attributes": "appName"})

    assert set(apps) == set(fake_apteligent.apps)
    assert len(fake_apteligent.tokens) == 2
    assert cache.get("tok:1")["access_token"] == fake_apteligent.tokens[1]
    assert sleeps.delays == []


def test_it_gives_up_after_a_second_401(fake_apteligent, sleeps):
    fake_apteligent.fail_next("401", times=2, path="/apps")

    with pytest.raises(SourceError, match=r"GET /apps: unauthorized \(HTTP 401\)"):
        with _apteligent(fake_apteligent, sleeps) as api:
            api.get("/apps", params={"attributes": "appName"})

    assert len(fake_apteligent.calls("/apps")) == 2
    assert len(fake_apteligent.tokens) == 2


def test_it_reports_refused_credentials(fake_apteligent, sleeps):
    ctx = fake_apteligent.context()
    ctx.credentials["password"] = "wrong-pw-123"

    with pytest.raises(SourceError) as caught:
        with _apteligent(fake_apteligent, sleeps, ctx=ctx) as api:
            api.get("/apps", params={"attributes": "appName"})

    assert str(caught.value).startswith("POST /token: HTTP 400")
    assert "wrong-pw-123" not in str(caught.value)
    assert fake_apteligent.calls("/apps") == []


def test_it_refuses_a_token_answer_without_a_token(fake_apteligent, sleeps):
    fake_apteligent.fail_next("wrong_shape", path="/token")

    with pytest.raises(SourceError, match="from POST /token: no access_token"):
        with _apteligent(fake_apteligent, sleeps) as api:
            api.get("/apps", params={"attributes": "appName"})


def test_it_requires_every_credential(fake_apteligent):
    ctx = fake_apteligent.context()
    del ctx.credentials["client_id"]

    with pytest.raises(SourceError, match="the 'client_id' credential is missing"):
        http.apteligent_client(ctx)


def test_it_sends_the_pingdom_token_and_does_not_retry_a_401(fake_pingdom, sleeps):
    with _pingdom(fake_pingdom, sleeps) as api:
        assert "checks" in api.get("/checks")
    ctx = fake_pingdom.context()
    fake_pingdom.token = "another"  # revoked

    with pytest.raises(SourceError, match=r"GET /checks: unauthorized \(HTTP 401\)"):
        with http.pingdom_client(ctx, sleep=sleeps) as api:
            api.get("/checks")

    assert len(fake_pingdom.calls("/checks")) == 2


# --- Retries --------------------------------------------------------------------


def test_it_retries_5xx_with_exponential_backoff(fake_pingdom, sleeps):
    fake_pingdom.fail_next("500", times=2)
    fake_pingdom.fail_next("503")

    with _pingdom(fake_pingdom, sleeps) as api:
        assert "checks" in api.get("/checks")

    # rand() = 1: the top of each full-jitter range, 0.5 * 2**n
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert api.ctx.calls == 4


def test_it_draws_each_wait_at_random_below_a_cap(fake_pingdom, sleeps):
    fake_pingdom.fail_next("502", times=3)
    draws = iter([0.5, 0.25, 1.0])

    with _pingdom(
        fake_pingdom, sleeps, backoff=4, backoff_max=6, rand=lambda: next(draws)
    ) as api:
        api.get("/checks")

    # 0.5 * 4, 0.25 * min(6, 8), 1 * min(6, 16)
    assert sleeps.delays == [2.0, 1.5, 6.0]


def test_it_gives_up_after_the_last_attempt(fake_pingdom, sleeps):
    fake_pingdom.fail_next("503", times=4)

    with pytest.raises(SourceError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    assert str(caught.value) == "GET /checks: HTTP 503; gave up after 4 tries"
    assert len(sleeps.delays) == 3
    assert len(fake_pingdom.calls()) == 4


def test_it_does_not_retry_other_4xx(fake_pingdom, sleeps):
    with pytest.raises(SourceError, match=r"^GET /nothing: HTTP 404: "):
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/nothing")

    assert len(fake_pingdom.calls()) == 1
    assert sleeps.delays == []


def test_it_retries_a_call_that_times_out(fake_pingdom, sleeps):
    fake_pingdom.fail_next("slow", delay=5)
    ctx = fake_pingdom.context(timeout=0.2)

    with http.pingdom_client(ctx, sleep=sleeps, rand=lambda: 1.0) as api:
        assert "checks" in api.get("/checks")

    assert sleeps.delays == [0.5]
    assert ctx.calls == 2


def test_it_gives_up_when_every_try_times_out(fake_pingdom, sleeps):
    fake_pingdom.fail_next("slow", times=4, delay=5)
    ctx = fake_pingdom.context(timeout=0.2)

    with pytest.raises(SourceError) as caught:
        with http.pingdom_client(ctx, sleep=sleeps) as api:
            api.get("/checks")

    assert str(caught.value) == (
        "GET /checks: timed out after 0.2 s; gave up after 4 tries"
    )


def test_it_retries_connection_errors(sleeps):
    ctx = FetchContext(
        name="nowhere",
        base_url=f"http://127.0.0.1:{free_port()}/api/3.1",
        credentials={"token": "t0ken-xyz"},
        prefix="",
        timeout=1,
    )

    with pytest.raises(SourceError) as caught:
        with http.pingdom_client(ctx, sleep=sleeps) as api:
            api.get("/checks")

    assert str(caught.value) == (
        "GET /checks: connection failed (ConnectionError); gave up after 4 tries"
    )
    assert ctx.calls == 4


# --- Rate limits ----------------------------------------------------------------


def test_it_waits_what_retry_after_says(fake_pingdom, sleeps):
    fake_pingdom.fail_next("429", retry_after="7")

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")

    assert sleeps.delays == [7.0]


def test_it_reads_retry_after_as_an_http_date(fake_apteligent, sleeps):
    moment = datetime.fromtimestamp(CLOCK, UTC) + timedelta(seconds=12)
    fake_apteligent.fail_next(
        "429", path="/apps", retry_after=format_datetime(moment, usegmt=True)
    )

    with _apteligent(fake_apteligent, sleeps, clock=lambda: CLOCK) as api:
        api.get("/apps", params={"attributes": "appName"})

    assert sleeps.delays == [12.0]


def test_it_backs_off_on_a_429_without_hints(fake_pingdom, sleeps):
    fake_pingdom.fail_next("429")

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")

    assert sleeps.delays == [0.5]


def test_it_waits_for_pingdom_limit_reset_on_a_429(fake_pingdom, sleeps):
    fake_pingdom.fail_next("429", req_limit="Remaining: 0, Time until reset: 30")

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")

    assert sleeps.delays == [30.0]


def test_it_waits_before_the_next_call_once_the_limit_is_spent(fake_pingdom, sleeps):
    fake_pingdom.req_limit_short = (0, 12)

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")
        assert sleeps.delays == []
        api.get("/checks")

    assert sleeps.delays == [12.0]


def test_it_refuses_to_wait_longer_than_its_limit(fake_pingdom, sleeps):
    fake_pingdom.req_limit_long = (0, 2589)

    with pytest.raises(SourceError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")
            api.get("/checks")

    assert str(caught.value) == (
        "GET /checks: the API's rate limit is spent and resets in 2589 s, "
        "beyond the 60 s this importer waits"
    )
    assert sleeps.delays == []
    assert len(fake_pingdom.calls()) == 1


def test_it_fails_at_once_when_retry_after_is_too_long(fake_pingdom, sleeps):
    fake_pingdom.fail_next("429", retry_after="3600")

    with pytest.raises(SourceError, match="next try would be in 3600 s"):
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    assert sleeps.delays == []
    assert len(fake_pingdom.calls()) == 1


def test_it_waits_what_retry_after_says_on_a_503(fake_pingdom, sleeps):
    fake_pingdom.fail_next("503", retry_after="7")

    with _pingdom(fake_pingdom, sleeps) as api:
        assert "checks" in api.get("/checks")

    assert sleeps.delays == [7.0]


def test_it_reads_retry_after_of_a_503_as_an_http_date(fake_apteligent, sleeps):
    moment = datetime.fromtimestamp(CLOCK, UTC) + timedelta(seconds=12)
    fake_apteligent.fail_next(
        "503", path="/apps", retry_after=format_datetime(moment, usegmt=True)
    )

    with _apteligent(fake_apteligent, sleeps, clock=lambda: CLOCK) as api:
        api.get("/apps", params={"attributes": "appName"})

    assert sleeps.delays == [12.0]


def test_it_waits_for_pingdom_limit_reset_on_a_503(fake_pingdom, sleeps):
    fake_pingdom.fail_next("503", req_limit="Remaining: 0, Time until reset: 30")

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")

    assert sleeps.delays == [30.0]


def test_a_retry_after_any_5xx_waits_for_a_spent_limit(fake_pingdom, sleeps):
    # a 500 has no Retry-After to honour, but the limit it reports as spent is
    fake_pingdom.fail_next("500", req_limit="Remaining: 0, Time until reset: 30")

    with _pingdom(fake_pingdom, sleeps) as api:
        api.get("/checks")

    assert sleeps.delays == [30.0]


def test_it_fails_at_once_when_a_503_asks_for_too_long(fake_pingdom, sleeps):
    fake_pingdom.fail_next("503", retry_after="3600")

    with pytest.raises(SourceWideError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    assert str(caught.value) == (
        "GET /checks: HTTP 503; the next try would be in 3600 s, beyond the 60 s "
        "this importer waits"
    )
    assert sleeps.delays == []


def test_it_bounds_the_total_wait_of_a_call(fake_pingdom, sleeps):
    fake_pingdom.fail_next("429", times=3, retry_after="50")

    with pytest.raises(SourceError, match=r"rate limited \(HTTP 429\)"):
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    # a third wait would bring the call past MAX_TOTAL_WAIT (120 s)
    assert sleeps.delays == [50.0, 50.0]


# --- Failures of the whole source -------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "wide"),
    [
        ({"mode": "401"}, True),  # the token refused
        ({"mode": "429", "times": 4}, True),  # rate limited after the last try
        ({"mode": "429", "retry_after": "3600"}, True),
        ({"mode": "503", "retry_after": "3600"}, True),  # the API asks for an hour
        ({"mode": "500", "times": 4}, False),  # may be this call's only
        ({"mode": "503", "times": 4}, False),
        ({"mode": "404"}, False),
        ({"mode": "not_json"}, False),
    ],
)
def test_it_tells_failures_of_the_whole_source_from_one_calls(
    fake_pingdom, sleeps, failure, wide
):
    fake_pingdom.fail_next(path="/results/", **failure)

    with pytest.raises(SourceError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/results/85975")

    assert isinstance(caught.value, SourceWideError) is wide


def test_a_refused_password_grant_fails_the_whole_source(fake_apteligent, sleeps):
    ctx = fake_apteligent.context()
    ctx.credentials["password"] = "wrong-pw-123"

    with pytest.raises(SourceWideError, match=r"^POST /token: HTTP 400"):
        with _apteligent(fake_apteligent, sleeps, ctx=ctx) as api:
            api.get("/apps", params={"attributes": "appName"})


def test_a_connection_failure_fails_the_whole_source_but_a_timeout_not(
    fake_pingdom, sleeps
):
    nowhere = FetchContext(
        name="nowhere",
        base_url=f"http://127.0.0.1:{free_port()}/api/3.1",
        credentials={"token": "t0ken-xyz"},
        prefix="",
        timeout=1,
    )
    with pytest.raises(SourceWideError, match="connection failed"):
        with http.pingdom_client(nowhere, sleep=sleeps, max_attempts=2) as api:
            api.get("/checks")

    fake_pingdom.fail_next("slow", times=2, delay=5)
    ctx = fake_pingdom.context(timeout=0.2)
    with pytest.raises(SourceError, match="timed out") as caught:
        with http.pingdom_client(ctx, sleep=sleeps, max_attempts=2) as api:
            api.get("/checks")
    assert not isinstance(caught.value, SourceWideError)


# --- Bad answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", "not valid JSON (application/json, 21 bytes)"),
        ("not_json", "not valid JSON (text/html, 24 bytes): <html>Maintenance</html>"),
    ],
)
def test_it_refuses_answers_that_are_not_json(fake_pingdom, sleeps, mode, message):
    fake_pingdom.fail_next(mode)

    with pytest.raises(SourceError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    assert str(caught.value).startswith(f"GET /checks: the answer is {message}")
    assert len(fake_pingdom.calls()) == 1


# --- Secrets --------------------------------------------------------------------


@pytest.mark.usefixtures("locmem_cache")
def test_it_keeps_secrets_out_of_errors_and_logs(fake_apteligent, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    fake_apteligent.fail_next("500", path="/apps")
    fake_apteligent.fail_next("401", path="/apps")
    fake_apteligent.fail_next("echo", path="/apps")  # echoes the Bearer token

    with pytest.raises(SourceError) as caught:
        with _apteligent(fake_apteligent, sleeps, token_cache_key="tok:1") as api:
            api.get("/apps", params={"attributes": "appName"})

    message = str(caught.value)
    assert message.startswith("GET /apps: HTTP 400: ")
    assert "***" in message  # the echoed token, redacted
    secrets = [*fake_apteligent.credentials().values(), *fake_apteligent.tokens]
    assert len(fake_apteligent.tokens) == 2
    for secret in secrets:
        assert secret not in message
        assert secret not in caplog.text
    assert "retrying" in caplog.text


def test_it_keeps_the_pingdom_token_out_of_errors(fake_pingdom, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    fake_pingdom.fail_next("echo")

    with pytest.raises(SourceError) as caught:
        with _pingdom(fake_pingdom, sleeps) as api:
            api.get("/checks")

    assert fake_pingdom.token not in str(caught.value)
    assert fake_pingdom.token not in caplog.text
    assert fake_pingdom.token not in repr(api.ctx)
