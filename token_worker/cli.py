"""The ``token-worker`` command line. Thin: every command calls library code.

Exit codes (contract): 0 success; 1 the check or the action failed; 2 bad usage
or invalid config. Errors are one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time

import click

from .cli_demo import demo as demo_command
from .cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    Fail,
    Seconds,
    State,
    Usage,
    render_certificates,
    render_table,
)
from .cli_support import errors as _errors
from .config import Config, config_warnings, credential_problems, redact_url
from .exceptions import ConfigError
from .status import certificate_expiries, read_statuses

log = logging.getLogger("token_worker.cli")

pass_state = click.make_pass_decorator(State)


def setup_logging(level: str, fmt: str) -> None:
    from .logs import configure

    configure(level, fmt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="TOKEN_WORKER_CONFIG",
              help="Config file (default: $TOKEN_WORKER_CONFIG, else ./token_worker.toml).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="json: one object per line.")
@click.version_option(package_name="token_worker")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Fleet-wide Stitch client tokens, refreshed by Celery and read from Redis."""
    setup_logging(log_level.upper(), log_format)
    ctx.obj = State(config_path)
    ctx.call_on_close(ctx.obj.close)


# -- status / check -----------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per profile.")
@click.option("--watch", is_flag=True, help="Redraw every second until Ctrl-C.")
@pass_state
@_errors
def status(state: State, as_json: bool, watch: bool) -> None:
    """Show every profile's token state (needs only Redis)."""
    store = state.store
    if watch:
        # Ctrl-C ends a watch cleanly (exit 0), whatever it interrupts (a Redis read too)
        signal.signal(signal.SIGINT, lambda *_: sys.exit(EXIT_OK))
    while True:
        rows = read_statuses(state.config, store)
        if as_json:
            certs = certificate_expiries(state.config)
            data = [r.to_dict() for r in rows]
            for item in data:
                if item["profile"] in certs:
                    item["certificate_expires_at"] = certs[item["profile"]][1]
            click.echo(json.dumps(data, indent=2))
        else:
            if watch:
                click.clear()
                click.echo(f"token_worker status  {time.strftime('%H:%M:%S')}  "
                           f"redis {redact_url(state.config.redis.url)}  (Ctrl-C to quit)\n")
            click.echo(render_table(rows))
            for line in render_certificates(certificate_expiries(state.config)):
                click.echo(line)
        if not watch:
            return
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            return


@cli.command()
@click.option("--min-ttl", type=Seconds(), default=0.0, show_default=True,
              help="Seconds of life every token must have left.")
@pass_state
@_errors
def check(state: State, min_ttl: float) -> None:
    """Exit 0 when every profile has a token with at least --min-ttl seconds left."""
    rows = read_statuses(state.config, state.store)
    failing = [r for r in rows if r.expires_in is None or r.expires_in < min_ttl]
    for r in failing:
        left = "no token" if r.expires_in is None else f"{r.expires_in:.0f}s left"
        error = f"; last error: {r.last_error}" if r.last_error else ""
        click.echo(f"FAIL {r.profile}: {left} (need {min_ttl:g}s){error}", err=True)
    if failing:
        raise SystemExit(EXIT_FAILED)
    click.echo(f"OK {len(rows)} profiles have at least {min_ttl:g}s left")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok, failed, checks.")
@pass_state
@_errors
def doctor(state: State, as_json: bool) -> None:
    """Check the deployment (Redis, broker, endpoint, certificates); exit 1 on a hazard."""
    from .doctor import exit_code, report, run_doctor

    checks = run_doctor(state.config)
    if as_json:
        click.echo(json.dumps(report(checks), indent=2))
    else:
        for item in checks:
            click.echo(item.line())
    raise SystemExit(exit_code(checks))


# -- refresh ------------------------------------------------------------------
@cli.command()
@click.argument("profiles", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every configured profile.")
@click.option("--force", is_flag=True, help="Refresh even when the token is not yet due.")
@click.option("--local", is_flag=True,
              help="Refresh in this process (still under the fleet-wide lock).")
@click.option("--wait", type=Seconds(), default=None, metavar="SECONDS",
              help="Wait until the new token is published; exit 1 at the deadline. With "
                   "--local the refresh always waits (for a lock holder's token, up to the "
                   "lock TTL): --wait sets that deadline instead.")
@pass_state
@_errors
def refresh(state: State, profiles: tuple[str, ...], all_: bool, force: bool, local: bool,
            wait: float | None) -> None:
    """Refresh now, through the workers (default) or in this process (--local)."""
    if not profiles and not all_:
        raise Usage("name at least one PROFILE, or use --all")
    config = state.config
    names = sorted(config.profiles) if all_ else list(dict.fromkeys(profiles))
    unknown = [p for p in names if p not in config.profiles]
    if unknown:
        raise Usage(f"unknown profile(s): {', '.join(unknown)} "
                    f"(configured: {', '.join(sorted(config.profiles))})")
    if local:
        _refresh_local(config, names, force, wait)
    else:
        _refresh_remote(state, names, force, wait)


def _refresh_local(config: Config, names: list[str], force: bool,
                   deadline: float | None) -> None:
    """Refresh here. ``deadline`` (``--wait``): how long a profile whose lock another
    process holds may wait for that holder's token (default: the lock TTL)."""
    from .refresh import Outcome, Refresher

    problems = credential_problems(config)
    if problems:
        raise ConfigError(problems)
    refresher = Refresher.from_config(config)
    failed = 0
    try:
        requested_at = refresher.store.time()
        for name in names:
            result = refresher.refresh_profile(name, force, requested_at=requested_at,
                                               wait_seconds=deadline)
            detail = f" fingerprint={result.fingerprint}" if result.fingerprint else ""
            if result.reason is not None and result.outcome is not Outcome.FAILED:
                detail = f" reason={result.reason}{detail}"
            if result.outcome is Outcome.FAILED:
                failed += 1
                detail = f": {result.error}"
            click.echo(f"{name}: {result.outcome}{detail}")
    finally:
        refresher.close()
    if failed:
        raise SystemExit(EXIT_FAILED)


def _refresh_remote(state: State, names: list[str], force: bool, wait: float | None) -> None:
    from .dispatch import send_refresh
    from .waiting import wait_for_refresh

    store = state.store
    requested_at = store.time()
    send_refresh(state.config, names, force=force, requested_at=requested_at)
    click.echo(f"sent {'forced ' if force else ''}refresh for {', '.join(names)} "
               f"to queue {state.config.celery.queue!r}")
    if wait is None:
        return
    problems = wait_for_refresh(state.config, store, names, force=force,
                                requested_at=requested_at, timeout=wait)
    for name in names:
        if name in problems:
            click.echo(f"{name}: FAILED: {problems[name]}", err=True)
        else:
            click.echo(f"{name}: published")
    if problems:
        raise SystemExit(EXIT_FAILED)


# -- purge --------------------------------------------------------------------
@cli.command()
@click.argument("profile")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
@_errors
def purge(state: State, profile: str, yes: bool) -> None:
    """Delete a profile's token; readers wait for a fresh one, beat refreshes it next tick."""
    if profile not in state.config.profiles:
        raise Usage(f"unknown profile {profile!r}")
    if not yes and not click.confirm(f"Delete the token of {profile!r}? Readers will get no "
                                     f"token until it is refreshed", default=False):
        raise Fail("not confirmed; nothing deleted")
    deleted = state.store.purge(profile)
    click.echo(f"{profile}: {'token deleted' if deleted else 'had no token'}; due now")


@cli.command()
@click.argument("profile")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
@_errors
def forget(state: State, profile: str, yes: bool) -> None:
    """Remove a profile from the fleet: token, status, schedule entry and registry entry.

    Workers never remove profiles they do not know (another config may have them), so
    this is the explicit last step once every worker's config has dropped the profile.
    """
    if profile in state.config.profiles:
        # workers with this config would register it again at once
        raise Usage(f"profile {profile!r} is still configured in {state.config.path}; "
                    f"remove it from every worker's config first")
    if not yes and not click.confirm(f"Remove profile {profile!r} from the fleet? Readers "
                                     f"will be told it is unknown", default=False):
        raise Fail("not confirmed; nothing removed")
    store = state.store
    known = profile in store.registered_profiles()
    store.forget(profile)
    click.echo(f"{profile}: forgotten" + ("" if known else " (it was not registered)"))


# -- config -------------------------------------------------------------------
@cli.group("config")
def config_group() -> None:
    """Configuration commands."""


@config_group.command("check")
@pass_state
@_errors
def config_check(state: State) -> None:
    """Validate the config, read every credential; exit 2 listing the problems."""
    config = state.config
    problems = credential_problems(config)
    for warning in config_warnings(config):
        click.echo(f"warning: {warning}", err=True)
    if problems:
        raise ConfigError(problems)
    click.echo(f"OK {config.path}: {len(config.profiles)} profiles, "
               f"{len(config.clients)} clients, redis {redact_url(config.redis.url)}")


@cli.command()
@click.option("--kid", default=None, metavar="NAME",
              help="Key id: 1-32 of A-Z a-z 0-9 _ . - (default: k + today's UTC date).")
def keygen(kid: str | None) -> None:
    """Print a new encryption-at-rest key entry (kid:base64) for redis.encryption_keys_*."""
    from .crypto import generate_key, parse_keys

    entry = generate_key(time.strftime("k%Y%m%d", time.gmtime()) if kid is None else kid)
    try:
        parse_keys(entry, where="--kid")
    except ConfigError:
        raise Usage("--kid: use 1-32 of A-Z a-z 0-9 _ . -") from None
    click.echo(entry)


# -- processes ----------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes (default: Celery's, the number of CPUs).")
@click.option("--no-beat", is_flag=True, help="Run without embedded beat.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
@_errors
def worker(state: State, concurrency: int | None, no_beat: bool,
           celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker with embedded beat on the configured queue."""
    from .worker import run_worker

    config = state.config
    problems = credential_problems(config)
    if problems:
        raise ConfigError(problems)
    run_worker(config, beat=not no_beat, concurrency=concurrency, extra_args=list(celery_args))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8400, show_default=True)
@click.option("--expires-in", type=Seconds(min=1), default=3600, show_default=True,
              help="Lifetime of issued tokens, in seconds.")
@click.option("--client", "clients", multiple=True, metavar="CLIENT_ID=SECRET_ENV",
              help="Accept only this client, its secret read from env var SECRET_ENV. "
                   "Default: any client with any non-empty secret.")
@click.option("--certificate", "certificates", multiple=True, metavar="CLIENT_ID=PEM_FILE",
              help="Accept private_key_jwt assertions from this client, verified with the "
                   "certificate (or public key) in PEM_FILE.")
def emulator(host: str, port: int, expires_in: float, clients: tuple[str, ...],
             certificates: tuple[str, ...]) -> None:
    """A local Stitch-compatible token endpoint for development."""
    import os
    from pathlib import Path

    from .testing.emulator import MAX_EXPIRES_IN, serve

    if expires_in > MAX_EXPIRES_IN:  # the Emulator refuses it; say which option is wrong
        raise Usage(f"--expires-in: at most {MAX_EXPIRES_IN} seconds")
    pems: dict[str, bytes | str] = {}
    for spec in certificates:
        client_id, _, pem_file = spec.partition("=")
        try:
            pems[client_id] = Path(pem_file).read_bytes()
        except OSError as exc:
            raise Usage(f"--certificate {spec}: cannot read {pem_file} ({exc.strerror})") from None

    accepted: dict[str, str] | None = None
    if clients:
        accepted = {}
        for spec in clients:
            client_id, _, env = spec.partition("=")
            if not client_id or not env or not os.environ.get(env):
                raise Usage(f"--client {spec}: expected CLIENT_ID=SECRET_ENV with SECRET_ENV set")
            accepted[client_id] = os.environ[env]
    try:
        serve(host, port, clients=accepted, expires_in=expires_in, certificates=pems)
    except ValueError as exc:  # a PEM without an RSA certificate or public key
        raise Usage(f"--certificate: {exc}") from None


@cli.command("metrics")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (0.0.0.0 for a Kubernetes sidecar).")
@click.option("--port", type=click.IntRange(1, 65535), default=9464, show_default=True)
@pass_state
@_errors
def metrics_command(state: State, host: str, port: int) -> None:
    """Serve the per-profile gauges from Redis on /metrics, until SIGTERM (needs only Redis)."""
    import threading

    from .metrics import serve_sidecar

    config = state.config
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve_sidecar(config, host, port, stop)
    except ImportError as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:
        raise Fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


cli.add_command(demo_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="token-worker", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)

