"""Render ``ops/grafana/dashboard.png``: the dashboard's own queries over a real run.

Grafana is packaged neither by Debian nor by PyPI, so Grafana does not draw this picture.
Everything else is real:

* a private ``redis-server``, the Stitch emulator (a thread of this process), a Celery
  worker with embedded beat serving ``/metrics`` (``[metrics] port``), and the
  ``token-worker metrics`` sidecar; three profiles whose tokens live ``--lifetime`` s;
* Prometheus (Debian's ``prometheus`` package) scraping both exporters every 0.5 s;
* three induced episodes, shaded on the picture: a slow endpoint, an endpoint outage
  (the emulator stopped) and a Redis restart (killed, back empty); after each of the last
  two the run waits until every profile has a token again (a profile with none retries at
  least every ``BACKOFF_MAX_WITHOUT_TOKEN`` seconds, longer than these tokens live).

Then every panel's own PromQL goes to Prometheus's HTTP API (``query_range`` for graphs
and state timelines, ``query`` at the end for stats), with the variables a viewer would
pick: ``$profile`` All, ``$window`` 30s (the run lasts minutes; the dashboard's default
is 1h). matplotlib draws each panel at its ``gridPos`` with its title, unit, legend
format, value mappings, overrides and thresholds: only what this dashboard's panel types
use (row, timeseries, state-timeline, stat). One colour per profile across panels.

    scripts/render_dashboard [--out PATH] [--lifetime SECONDS] [--save JSON | --redraw JSON]

Needs ``apt-get install prometheus redis-server`` and the ``render`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from render_panels import SCRAPE, Episode, Panel, Query, Run, Series, draw, legend, plan

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent  # this checkout's token_worker, for this process and the worker
DASHBOARD = HERE / "token_worker.json"
OUT = HERE / "dashboard.png"
VARIABLES = {"profile": ".*", "window": "30s", "datasource": "prometheus"}
SECRET_ENV = "RENDER_SECRET"  # noqa: S105 - a variable name
PROFILES = {"payments": "client_paymentrequest", "refunds": "client_refund",
            "disbursements": "client_disbursement"}



# -- the run ------------------------------------------------------------------------------
def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http://127.0.0.1
        data: bytes = resp.read()
        return data


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def prometheus(workdir: Path, targets: dict[str, int]) -> Iterator[str]:
    """A Prometheus scraping ``instance name -> port`` every 0.5 s; yields its base URL."""
    from token_worker.testing import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
    static = [{"targets": [f"127.0.0.1:{port}"], "labels": {"instance": name}}
              for name, port in targets.items()]
    config = {"global": {"scrape_interval": f"{int(SCRAPE * 1000)}ms",
                         "scrape_timeout": f"{int(SCRAPE * 1000)}ms"},
              "scrape_configs": [{"job_name": "token_worker", "static_configs": static}]}
    (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - the binary on PATH, fixed arguments
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait("prometheus", lambda: _get(base + "/-/ready").startswith(b"Prometheus"))
        yield base
    finally:
        _stop(proc)


def fleet_run(workdir: Path, lifetime: float,
              log: Callable[[str], None]) -> Generator[Run, None, None]:
    """The fleet, Prometheus and the episodes; yields once it is all over, Prometheus still
    up (a generator: the caller queries, then closes it)."""
    from token_worker.backoff import BACKOFF_MAX_WITHOUT_TOKEN
    from token_worker.testing import (
        Emulator,
        RedisServer,
        celery_worker,
        free_port,
        spawn_worker,
        worker_env,
        write_config,
    )

    secret = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        redis = RedisServer(workdir=workdir / "redis").start()
        stack.callback(redis.stop)
        emulator = Emulator(clients={"render-client": secret}, expires_in=lifetime).start()
        stack.callback(emulator.stop)
        emulator.set_latency(0.05)
        worker_port, sidecar_port = free_port(), free_port()
        profiles: dict[str, dict[str, Any]] = {n: {"scopes": [s]} for n, s in PROFILES.items()}
        profiles["refunds"]["margin_seconds"] = round(lifetime / 2, 1)  # out of step
        config = write_config(
            workdir / "token_worker.toml", redis_url=redis.url, token_url=emulator.url,
            profiles=profiles, queue="token_worker_render", margin=round(lifetime / 3, 1),
            interval=1, timeout=5, client_id="render-client", secret_env=SECRET_ENV,
            sections={"metrics": {"port": worker_port}})
        env = worker_env({SECRET_ENV: secret}, config=config, pythonpath=[REPO])
        prom = stack.enter_context(prometheus(workdir, {"worker /metrics": worker_port,
                                                        "token-worker metrics": sidecar_port}))
        start = time.time()
        worker = celery_worker(workdir, "render", queues="token_worker_render",
                               concurrency=2, env=env)
        stack.callback(worker.stop)
        sidecar = spawn_worker(
            [sys.executable, "-m", "token_worker", "metrics", "--port", str(sidecar_port)],
            name="sidecar", workdir=workdir, env=env)
        stack.callback(sidecar.stop)
        worker.wait_ready()
        log(f"worker ready; Prometheus {prom}")
        episodes: list[Episode] = []

        def hold(seconds: float) -> None:
            time.sleep(seconds)
            if worker.proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{worker.log()[-2000:]}")

        def episode(name: str, begin: Callable[[], object], end: Callable[[], object],
                    seconds: float) -> None:
            log(f"episode: {name} ({seconds:.0f} s)")
            begin()
            t = time.time()
            hold(seconds)
            end()
            episodes.append(Episode(name, t, time.time()))

        def until_every_token_is_back() -> None:
            # with no token a profile retries at least every BACKOFF_MAX_WITHOUT_TOKEN s
            deadline = time.monotonic() + BACKOFF_MAX_WITHOUT_TOKEN + 2 * lifetime
            while time.monotonic() < deadline and len(query(prom, back, 0, time.time())) \
                    < len(PROFILES):
                hold(1)
            hold(0.6 * lifetime)

        back = Query("back", "min by (profile) (token_worker_token_expires_in_seconds) > 0",
                     None, instant=True)
        hold(1.5 * lifetime)
        episode("slow endpoint (2 s)", lambda: emulator.set_latency(2.0),
                lambda: emulator.set_latency(0.05), 1.2 * lifetime)
        hold(0.5 * lifetime)
        episode("endpoint outage", emulator.stop, emulator.start, 1.6 * lifetime)
        until_every_token_is_back()
        episode("Redis restart", redis.kill, redis.start, 15)
        until_every_token_is_back()
        yield Run(prom, start, time.time(), episodes)


def query(base: str, q: Query, start: float, end: float) -> list[Series]:
    """The query's result from Prometheus: a range, or one point at ``end`` if instant."""
    if q.instant:
        args = {"query": q.expr, "time": f"{end:.3f}"}
        path = "/api/v1/query"
    else:
        args = {"query": q.expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                "step": str(SCRAPE)}
        path = "/api/v1/query_range"
    reply = json.loads(_get(f"{base}{path}?{urllib.parse.urlencode(args)}", timeout=30))
    if reply.get("status") != "success":
        raise RuntimeError(f"{q.ref} {q.expr!r}: {reply.get('error')}")
    data = reply["data"]
    if data["resultType"] == "scalar":
        return [({}, [(float(data["result"][0]), float(data["result"][1]))])]
    key = "value" if data["resultType"] == "vector" else "values"
    return [(r["metric"], [(float(t), float(v)) for t, v in
                           (r[key] if key == "values" else [r[key]])])
            for r in data["result"]]


def collect(run: Run, panels: list[Panel]) -> dict[tuple[int, str], list[Series]]:
    """(panel id, refId) -> the series Prometheus returned, sorted by name."""
    out = {}
    for panel in panels:
        for q in panel.queries:
            result = query(run.prometheus, q, run.start, run.end)
            out[(panel.id, q.ref)] = sorted(result, key=lambda s: legend(q.legend, s[0]))
    return out


def run_and_collect(panels: list[Panel],
                    lifetime: float) -> tuple[Run, dict[tuple[int, str], list[Series]]]:
    workdir = Path(tempfile.mkdtemp(prefix="token_worker-render-"))
    try:
        runs = fleet_run(workdir, lifetime, lambda m: print(f"render: {m}", flush=True))
        try:
            run = next(runs)
            return run, collect(run, panels)
        finally:
            runs.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def dump(run: Run, data: dict[tuple[int, str], list[Series]]) -> str:
    return json.dumps({"run": {"start": run.start, "end": run.end,
                               "episodes": [vars(e) for e in run.episodes]},
                       "data": [[pid, ref, series] for (pid, ref), series in data.items()]})


def load(path: Path) -> tuple[Run, dict[tuple[int, str], list[Series]]]:
    saved = json.loads(path.read_text())
    run = Run("", saved["run"]["start"], saved["run"]["end"],
              [Episode(**e) for e in saved["run"]["episodes"]])
    data = {(pid, ref): [(labels, [(t, v) for t, v in points]) for labels, points in series]
            for pid, ref, series in saved["data"]}
    return run, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--lifetime", type=float, default=20.0,
                        help="seconds each token lives (default 20)")
    parser.add_argument("--save", type=Path, metavar="JSON",
                        help="also write the query results there (for --redraw)")
    parser.add_argument("--redraw", type=Path, metavar="JSON",
                        help="draw from results a run saved, without running again")
    args = parser.parse_args(argv)
    if not 5 <= args.lifetime <= 300:
        parser.error("--lifetime must be within [5, 300]")

    dashboard = json.loads(DASHBOARD.read_text())
    panels = plan(dashboard, VARIABLES)
    if args.redraw:
        run, data = load(args.redraw)
    else:
        run, data = run_and_collect(panels, args.lifetime)
    if args.save:
        args.save.write_text(dump(run, data))
    draw(dashboard, panels, data, run, VARIABLES, args.out)
    print(f"render: wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(1, str(REPO))
    sys.exit(main())
