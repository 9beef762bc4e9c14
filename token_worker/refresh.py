"""When and how a profile's token is refreshed: the logic every entry point calls.

``refresh_profile`` is the only way a token gets requested and published: the
Celery tasks, the CLI (``--local``) and the 401 listener all call it.
Single-flight across the fleet comes from the Redis lock plus a re-read under
it; backoff after failures lives in the shared schedule, so it holds across
every worker and beat in the fleet.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from . import metrics
from .backoff import RETRY_SLEEP_CAP, next_attempt_delay
from .client import IssuedToken, TokenClient
from .clock import SYSTEM, Clock
from .config import Config
from .exceptions import ConfigError, StoreError, TokenRequestError
from .lock_keeper import LockKeeper
from .outcomes import Outcome, Reason, RefreshResult, log_fields
from .records import StatusRecord
from .store import REJECTED_COOLDOWN_SECONDS, Claim, TokenStore
from .tokens import JITTER_CAP_SECONDS, Token, TokenState, schedule_refresh, token_state

__all__ = ["Outcome", "Reason", "RefreshResult", "Refresher", "next_attempt_delay"]

log = logging.getLogger("token_worker.refresh")

# (sqrt 5 - 1) / 2: multiples of it mod 1 spread any run of ranks evenly over [0, 1)
_GOLDEN = 0.6180339887498949

class Refresher:
    """Refreshes the profiles of one config against one store and one endpoint."""

    def __init__(
        self,
        config: Config,
        store: TokenStore,
        client: TokenClient,
        *,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.clock = clock
        self.sleep = sleep or clock.sleep
        self.rng = rng or random.Random()  # noqa: S311  (jitter, not security)
        self._functions_loaded = False
        self._ranks: dict[str, int] | None = None
        # a rotation this late was not on its phase (a backlog, a stopped fleet)
        self._late_after = max(2 * config.refresh.interval_seconds, JITTER_CAP_SECONDS)

    @classmethod
    def from_config(cls, config: Config) -> Refresher:
        from .crypto import codec_for  # encryption at rest, when configured

        store = TokenStore.open(config.redis, codec=codec_for(config))
        endpoint = TokenClient(config.stitch.token_url, config.stitch.effective_audience,
                               config.stitch.timeout_seconds)
        return cls(config, store, endpoint)

    def _check_profile(self, profile: str) -> None:
        if profile not in self.config.profiles:
            known = ", ".join(sorted(self.config.profiles))
            raise ConfigError([f"profiles.{profile}: no such profile (configured: {known})"])

    # -- due -----------------------------------------------------------------
    def due_profiles(self) -> list[str]:
        """Profiles whose scheduled refresh time has passed, in O(1) round trips."""
        _, due = self.store.due(self.config.profiles)
        return due

    def claim_due(self, horizon: float, hold: float) -> tuple[float, list[Claim]]:
        """Claim the profiles due within ``horizon`` seconds for beat to send (see
        :meth:`TokenStore.claim_due`); each claim holds ``hold`` seconds past its due time."""
        return self.store.claim_due(self.config.profiles, horizon=horizon, hold=hold,
                                    cooldown=REJECTED_COOLDOWN_SECONDS)

    def _slot(self, profile: str) -> float:
        """The profile's slot in a lead time, for a token fetched off its rotation: its rank
        among this config's profiles times the golden ratio (mod 1), so the slots of any
        run of profiles, however they were fetched, cover the lead evenly."""
        if self._ranks is None:
            self._ranks = {name: i for i, name in enumerate(sorted(self.config.profiles))}
        return (self._ranks.get(profile, 0) * _GOLDEN) % 1.0

    def sync_profiles(self) -> None:
        """Publish this config's profiles for bare readers (merged into the registry,
        nothing secret) and load the readers' read function."""
        self.store.register_profiles({
            name: {"scopes": p.scopes, "margin_seconds": self.config.margin_for(name)}
            for name, p in self.config.profiles.items()
        })
        self._functions_loaded = self.store.load_functions()

    def _rejected(self, profile: str, token: Token | None, now: float,
                  status: StatusRecord | None = None) -> bool:
        """The current token was reported rejected, and no refresh caused by a report
        ran within the cooldown (a report per new token must not mean a call per tick).
        ``status``: the profile's status record, when the caller has read it already."""
        if token is None or not self.store.is_rejected(profile, token.fingerprint):
            return False
        if status is None:
            status = self.store.status(profile)
        return now - (status.rejected_refresh_at or 0.0) >= REJECTED_COOLDOWN_SECONDS

    def _is_due(self, profile: str, token: Token | None, now: float,
                rejected: bool | None = None) -> bool:
        """``rejected``: :meth:`_rejected`'s answer, when the caller has it already."""
        if rejected is None:
            rejected = self._rejected(profile, token, now)
        expires_at = token.expires_at if token else None
        refresh_at = token.refresh_at if token else None
        state = token_state(expires_at, refresh_at, now, rejected=rejected)
        return state is not TokenState.VALID

    def _read_token(self, profile: str) -> Token | None:
        try:
            return self.store.get_token(profile)
        except StoreError as exc:
            # unreadable (e.g. a key we cannot decrypt): replace it
            log.warning("profile=%s stored token unreadable, will replace: %s", profile, exc)
            return None

    def _unreadable(self, profile: str) -> bool:
        try:
            self.store.get_token(profile)
        except StoreError:
            return True
        return False

    # -- refresh -------------------------------------------------------------
    def refresh_profile(
        self, profile: str, force: bool = False, *, requested_at: float | None = None,
        wait_seconds: float | None = None, scheduled: bool = False, claimed: bool = False,
    ) -> RefreshResult:
        """Refresh one profile if it is due (or always, when forced).

        A forced refresh asks for a token issued after ``requested_at`` (default:
        now on the fleet clock). When another process holds the lock it waits for
        that refresh, up to ``wait_seconds`` (default: the lock TTL), and is
        satisfied by its token if issued after the request; otherwise it refreshes
        itself. So concurrent forced refreshes coalesce into one endpoint call.

        ``scheduled`` marks a refresh sent because the shared schedule said the
        profile was due (beat's fan-out, the listener): under the lock it also checks
        that the schedule still says so. A refresh queued while another attempt ran
        then fails and backs off does not call the endpoint again.

        ``claimed``: beat claimed this refresh when it sent it; whatever the outcome, the
        claim is released with the bookkeeping, so the next due time can be claimed.

        Raises:
            ConfigError: unknown profile.
            StoreError: Redis is unreachable (nothing was requested).
        """
        with self.store.batch() as batch:  # the bookkeeping writes, in one round trip
            result = self._attempt(profile, force, requested_at=requested_at,
                                   wait_seconds=wait_seconds, scheduled=scheduled,
                                   batch=batch, claimed=claimed)
            if result.outcome in (Outcome.NOT_DUE, Outcome.DONE_ELSEWHERE):
                # refreshed and failed are recorded with their details where they happen
                self.store.record_outcome(profile, str(result.outcome),
                                          str(result.reason or ""), pipeline=batch)
            if claimed:
                self.store.release_claim(profile, pipeline=batch)
        metrics.observe_refresh(profile, str(result.outcome))
        return result

    def _attempt(
        self, profile: str, force: bool = False, *, requested_at: float | None = None,
        wait_seconds: float | None = None, scheduled: bool = False, batch: Any = None,
        claimed: bool = False,
    ) -> RefreshResult:
        """The refresh itself; :meth:`refresh_profile` wraps it to record outcomes."""
        self._check_profile(profile)
        now = self.store.time()
        ttl = self.config.lock_ttl_seconds
        if requested_at is None:
            requested_at = now
        if not force:
            current = self._read_token(profile)
            if not self._is_due(profile, current, now):
                if scheduled and current is not None:
                    # the schedule said due, the token says not (a 401 reported for a
                    # token already replaced): put it back, or every tick asks again
                    self.store.schedule_no_earlier(profile, current.refresh_at, pipeline=batch)
                return RefreshResult(profile, Outcome.NOT_DUE, reason=Reason.TOKEN_VALID)
        if claimed:
            # about to take the lock: the claim now lapses just after the lock would, so a
            # worker killed mid-refresh delays the next one by the lock's TTL, as before
            # claims, not by the message's life (a refresh not due releases it below)
            self.store.hold_claim(profile, now + ttl + 1.0)
        deadline = self.clock.monotonic() + (ttl if wait_seconds is None else wait_seconds)
        while True:
            owner = self.store.acquire_lock(profile, ttl)
            if owner is not None:
                break
            if not force:
                # someone is refreshing it right now; their result is ours
                return RefreshResult(profile, Outcome.DONE_ELSEWHERE, reason=Reason.LOCK_HELD)
            done = self._wait_for_issue_after(profile, requested_at, deadline)
            if done is not None:
                return RefreshResult(profile, Outcome.DONE_ELSEWHERE, done.fingerprint,
                                     done.expires_at, done.issued_at, reason=Reason.SATISFIED)
            if self.clock.monotonic() >= deadline:
                return RefreshResult(profile, Outcome.FAILED,
                                     error="another refresh holds the lock; gave up waiting",
                                     error_code="lock_busy", reason=Reason.LOCK_BUSY)
        keeper = LockKeeper(self.store, profile, owner, ttl)
        try:
            return self._refresh_locked(profile, force, requested_at, scheduled, owner)
        finally:
            keeper.stop()
            self.store.release_lock(profile, owner)

    def _wait_for_issue_after(
        self, profile: str, requested_at: float, deadline: float
    ) -> Token | None:
        """Wait while the lock is held; the token if one issued after the request appears."""
        def settled() -> tuple[Token | None] | None:
            token = self._read_token(profile)
            if token is not None and token.issued_at >= requested_at:
                return (token,)
            if self.store.lock_ttl(profile) <= 0:
                return (None,)  # free again: go and take it
            return None

        if self.clock.monotonic() >= deadline:
            return None
        found = self.store.wait_for(settled, deadline, every=0.5,
                                    monotonic=self.clock.monotonic)
        return found[0] if found else None

    def _refresh_locked(self, profile: str, force: bool, requested_at: float,
                        scheduled: bool = False, owner: str = "") -> RefreshResult:
        now = self.store.time()
        current = self._read_token(profile)
        # read once: under the lock no other process can change it meanwhile
        status = self.store.status(profile)
        failures = status.failures
        rejected = self._rejected(profile, current, now, status)
        # re-read under the lock: another process may have just finished
        if force:
            if current is not None and current.issued_at >= requested_at:
                return RefreshResult(profile, Outcome.DONE_ELSEWHERE, current.fingerprint,
                                     current.expires_at, current.issued_at,
                                     reason=Reason.SATISFIED)
        elif current is not None and not self._is_due(profile, current, now, rejected):
            return RefreshResult(profile, Outcome.DONE_ELSEWHERE, current.fingerprint,
                                 current.expires_at, current.issued_at, reason=Reason.SATISFIED)
        elif scheduled and failures and (self.store.next_due(profile) or 0.0) > now:
            # an attempt since this refresh was sent failed and set a backoff: the next
            # attempt is the schedule's to make, not this stale message's
            return RefreshResult(profile, Outcome.DONE_ELSEWHERE, reason=Reason.STALE_MESSAGE)
        self.store.record_attempt(profile, now)
        started = self.clock.monotonic()
        issued, error, calls, sent_at = self._request(profile, failures)
        if issued is None:
            assert error is not None
            return self._failed(profile, error, current, calls, self.clock.monotonic() - started,
                                failures, owner, now)
        if current is not None and issued.access_token == current.access_token:
            # the server handed back the token it already gave us (some cache theirs):
            # nothing newer exists yet, so keep serving it and ask again after a backoff
            same = TokenRequestError(
                "the token endpoint returned the current token again (no newer token yet)",
                error="token_unchanged", retryable=True)
            return self._failed(profile, same, current, calls, self.clock.monotonic() - started,
                                failures, owner, now)
        issued_at = now + sent_at
        expires_at = issued_at + issued.expires_in
        # off its rotation (first token, after a 401, forced, or refreshed late, as after
        # an outage): the profile's own slot, so tokens fetched together do not come due
        # together. A success soon after a failed attempt keeps its rotation: a slot early
        # in the lead would cost the profile an extra call for every brief failure.
        late = current is None or current.refresh_at < now - self._late_after
        slot = self._slot(profile) if (late or force or rejected) else None
        token = Token(
            access_token=issued.access_token, token_type=issued.token_type, scopes=issued.scopes,
            issued_at=issued_at, expires_at=expires_at,
            refresh_at=schedule_refresh(issued_at, expires_at, self.config.margin_for(profile),
                                        rng=self.rng, slot=slot),
        )
        if not self._functions_loaded:  # readers' fast path; once per process
            self._functions_loaded = self.store.load_functions()
        written = self.store.publish(profile, token, owner,
                                     rejected_refresh_at=now if rejected else None)
        if written == 0 and current is None and self._unreadable(profile):
            # no reader can use what is stored (corrupt, or under a key nobody has), so
            # it must not outlive a good token just because it was issued later
            self.store.delete_token(profile)
            written = self.store.publish(profile, token, owner,
                                         rejected_refresh_at=now if rejected else None)
        duration = self.clock.monotonic() - started
        if written != 1:
            # a newer token won the race, our lock was taken over, or ours died in transit
            reason = {0: Reason.NEWER_TOKEN, -2: Reason.SUPERSEDED
                      }.get(written, Reason.EXPIRED_IN_TRANSIT)
            log.info("refresh profile=%s outcome=done_elsewhere fingerprint=%s duration=%.3fs "
                     "reason=%s", profile, token.fingerprint, duration, reason,
                     extra=log_fields(profile, "done_elsewhere", duration, token.fingerprint,
                                      reason=str(reason)))
            return RefreshResult(profile, Outcome.DONE_ELSEWHERE, calls=calls, reason=reason)
        log.info("refresh profile=%s outcome=refreshed fingerprint=%s expires_in=%.0fs "
                 "duration=%.3fs calls=%d", profile, token.fingerprint, issued.expires_in,
                 duration, calls,
                 extra=log_fields(profile, "refreshed", duration, token.fingerprint))
        return RefreshResult(profile, Outcome.REFRESHED, token.fingerprint, token.expires_at,
                             token.issued_at, calls=calls)

    def _request(
        self, profile: str, failures: int
    ) -> tuple[IssuedToken | None, TokenRequestError | ConfigError | None, int, float]:
        """One attempt: the call plus a few retries of retryable errors.

        Returns (token or None, the error or None, calls made, when the successful
        request was sent in seconds after the attempt began), so ``issued_at`` errs
        early, never late. Retries happen only while the profile was healthy: once it
        is failing, the shared backoff schedule decides, so an outage costs one call
        per attempt across the fleet.
        """
        client = self.config.client_for(profile)
        scopes = self.config.profiles[profile].scopes
        retries = 0 if failures else self.config.refresh.retries
        base = self.clock.monotonic()
        for attempt in range(retries + 1):
            sent_at = self.clock.monotonic() - base
            try:
                issued = self.client.request_token(client, scopes)
                metrics.observe_request(profile, "ok", self.clock.monotonic() - base - sent_at)
                return issued, None, attempt + 1, sent_at
            except ConfigError as exc:
                return None, exc, attempt, sent_at
            except TokenRequestError as exc:
                metrics.observe_request(profile, exc.error, self.clock.monotonic() - base - sent_at)
                pause = self.rng.uniform(0, min(RETRY_SLEEP_CAP, 0.25 * 2**attempt))
                if exc.retry_after is not None:
                    pause = max(pause, exc.retry_after)
                # past the cap, the across-tick schedule honours Retry-After instead
                if not exc.retryable or attempt == retries or pause > RETRY_SLEEP_CAP:
                    return None, exc, attempt + 1, sent_at
                log.info("refresh profile=%s retrying after %s in %.2fs", profile, exc.error,
                         pause)
                self.sleep(pause)
        raise AssertionError("unreachable")  # the last iteration always returns

    def _failed(self, profile: str, exc: TokenRequestError | ConfigError, current: Token | None,
                calls: int, duration: float, failures_before: int, owner: str = "",
                attempt_at: float | None = None) -> RefreshResult:
        if isinstance(exc, TokenRequestError):
            code, retryable, retry_after = exc.error, exc.retryable, exc.retry_after
            message = str(exc)
        else:
            code, retryable, retry_after = "config_error", False, None
            message = "; ".join(exc.problems)
        now = self.store.time()
        time_left = current.expires_at - now if current is not None else None
        delay = next_attempt_delay(failures_before + 1, retryable, time_left,
                                   self.config.refresh.interval_seconds, retry_after, self.rng)
        recorded = self.store.record_failure(profile, now, message, code, now + delay, owner,
                                             attempt_at)
        if recorded is None:
            # our lock expired and another holder has it: its outcome is the one to keep
            log.info("refresh profile=%s outcome=done_elsewhere reason=superseded error=%s",
                     profile, code, extra=log_fields(profile, "done_elsewhere", duration,
                                                     error_code=code, reason="superseded"))
            return RefreshResult(profile, Outcome.DONE_ELSEWHERE, error_code=code, calls=calls,
                                 reason=Reason.SUPERSEDED)
        failures, previous = recorded
        level = logging.ERROR if code != previous else logging.WARNING
        log.log(level, "refresh profile=%s outcome=failed error=%s retryable=%s failures=%d "
                "next_attempt_in=%.1fs duration=%.3fs calls=%d: %s", profile, code, retryable,
                failures, delay, duration, calls, message,
                extra=log_fields(profile, "failed", duration, error_code=code,
                                 reason="request_failed"))
        return RefreshResult(profile, Outcome.FAILED, error=message, error_code=code, calls=calls,
                             reason=Reason.REQUEST_FAILED)

    def close(self) -> None:
        self.client.close()
        self.store.close()
