"""Benchmark of the prediction API under the real gunicorn configuration, against its own ceiling.

Publishes a LinearRegression (an old client's model) and a media-mix model fitted on simulated data (10
channels, monthly, `training.mmm`) into two temporary local stores, then in one run:
  1. cold start: `gunicorn -c gunicorn.conf.py 'app:create_app()'` from process start to the first 200 of
     /predict (the model is read from the store and verified on the way), for each model;
  2. /predict under load, linear and media-mix: 32 keep-alive connections with wrk when it is on PATH, else
     a Python load generator (asyncio, one process per CPU);
  3. the ceiling: a bare Flask app answering constant JSON (bench/ceiling_app.py), same gunicorn settings,
     same load, in BENCH_ROUNDS (12) rounds of BENCH_SECONDS (2) alternating with /predict's, in an order
     rotated each round (three identical ceilings measured so differ by at most 2%; 5 rounds of 3 s in a fixed
     order let them differ by 10%);
  3b. POST /allocate on the media-mix model (10 channels): ALLOCATE_REQUESTS sequential requests over one
     connection with varied budgets and bounds, p50/p99 of the loopback round trip, each followed by the
     same request computed in-process (`training.core.planner.plan_budget`, the baseline: HTTP's share);
  4. server time of one batch of 1,000 and of 10,000 instances (loopback round trip, median of 5);
  5. slow uploads (bench/slow_clients.py): 0, 8 and 64 clients that send their headers with
     `Content-Length: 1000` and then one byte every 0.2 s, while 4 normal clients post /predict on fresh
     connections; the share of normal requests answered 200 within 1 s, and their p50/p99, against the
     same clients without attack.
Prints one table. Targets: /predict >= 0.9x ceiling req/s, p99 <= 10 ms, 10,000 batch <= 50 ms, cold
start <= 1.0 s, /allocate p50 <= 20 ms for 10 channels, >= 99% of normal requests answered with 8 and with
64 slow clients.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.slow_clients import slow_upload_attack  # noqa: E402
from training.core.registry import ModelRegistry, version_name  # noqa: E402
from training.core.store import open_store  # noqa: E402

CONNECTIONS = 32
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))  # per round and endpoint
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "12"))
ATTACK_SECONDS = 3.0  # each slow-upload run
CHANNELS = ["email", "search_engine", "social_media", "video"]
INSTANCE = {"SEARCH_ENGINE": 522807, "SOCIAL_MEDIA": 518987, "VIDEO": 519625, "EMAIL": 520742}
BODY = json.dumps(INSTANCE).encode()
MMM_CHANNELS = ["tv", "search_engine", "social_media", "video", "email", "display", "radio", "podcast",
                "out_of_home", "affiliates"]
ALLOCATE_REQUESTS = int(os.environ.get("BENCH_ALLOCATE_REQUESTS", "200"))

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "p50_ms": %%f, "p99_ms": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def publish_model(store_dir: Path) -> str:
    """Fit a LinearRegression on channel-named columns, publish and promote it; return its version."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.uniform(1e4, 1e6, (36, len(CHANNELS))), columns=CHANNELS)
    estimator = LinearRegression().fit(features, features.to_numpy() @ [3.1, 2.4, 1.7, 0.9] + 1000.0)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    created = datetime.now(UTC)
    version = version_name(created, buffer.getvalue())
    registry = ModelRegistry(open_store(store_dir))
    registry.publish(version, buffer.getvalue(), {
        "status": "promoted", "created_at": created.isoformat(), "run_id": "bench", "channels": CHANNELS,
        "intercept": float(estimator.intercept_), "algorithm": "ols",
        "coefficients": dict(zip(CHANNELS, estimator.coef_.tolist(), strict=True)),
        "libraries": {n: metadata.version(n) for n in ("numpy", "scikit-learn", "joblib")}})
    registry.promote(version)
    return version


def publish_mmm(store_dir: Path) -> tuple[str, float, bytes]:
    """Fit a media-mix model on simulated monthly data (10 channels, 3 years); publish and promote it.

    Returns the version, the fit's seconds and a /predict body within what the model saw (its current spend).
    """
    from training.config import ModelConfig
    from training.core.artifact import dump_spec
    from training.mmm import fit_mmm
    from training.sample import mmm_period_data, simulate_mmm

    started = time.perf_counter()
    data, _ = mmm_period_data(simulate_mmm(7, 3, MMM_CHANNELS), "month", "monthly")
    fitted = fit_mmm(data, ModelConfig(bootstrap_replicates=20, seed=7))
    fit_seconds = time.perf_counter() - started
    model_bytes = dump_spec(fitted.spec)
    created = datetime.now(UTC)
    version = version_name(created, model_bytes)
    registry = ModelRegistry(open_store(store_dir))
    registry.publish(version, model_bytes, {
        "status": "promoted", "created_at": created.isoformat(), "run_id": "bench", "channels": MMM_CHANNELS,
        "algorithm": "mmm", "roi": fitted.roi, "response_curves": fitted.response_curves,
        "decomposition": fitted.decomposition,
        "libraries": {n: metadata.version(n) for n in ("numpy", "scikit-learn", "joblib")}})
    registry.promote(version)
    current = {c: round(v["current_spend"]) for c, v in fitted.response_curves["channels"].items()}
    return version, fit_seconds, json.dumps({"spend": current}).encode()


def allocate_bodies(count: int) -> list[dict]:
    """Varied, deterministic /allocate requests for the 10-channel model (budgets, bounds, both scenarios)."""
    bodies = []
    for i in range(count):
        budget = 400_000.0 + 9_000.0 * i
        body: dict = {"budget": budget}
        if i % 3 == 1:
            body["bounds"] = {"tv": [50_000.0, 200_000.0], "email": [None, 40_000.0]}
        if i % 5 == 4:
            body.update(scenario="target_mroi", target_mroi=1.5)
        bodies.append(body)
    return bodies


def allocate_latency(port: int, store: Path) -> dict:
    """Loopback round trips of /allocate over one connection, each followed by the same request in-process.

    Interleaved, so that other load on the machine hits the request and its baseline alike.
    """
    from training.core.planner import model_facts, plan_budget

    registry = ModelRegistry(open_store(store))
    pointer = registry.latest()
    manifest, spec = registry.load(pointer.version)
    facts = model_facts(pointer.version, spec, manifest)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    wall, core = [], []
    try:
        for body in allocate_bodies(ALLOCATE_REQUESTS):
            encoded = json.dumps(body).encode()
            started = time.perf_counter()
            conn.request("POST", "/allocate", encoded, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            wall.append(time.perf_counter() - started)
            assert response.status == 200, response.status
            started = time.perf_counter()
            plan_budget(facts, body.pop("budget"), **body)
            core.append(time.perf_counter() - started)
    finally:
        conn.close()
    wall_q, core_q = statistics.quantiles(wall, n=100), statistics.quantiles(core, n=100)
    return {"p50_ms": wall_q[49] * 1000, "p99_ms": wall_q[98] * 1000, "core_p50_ms": core_q[49] * 1000,
            "core_p99_ms": core_q[98] * 1000}


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST `body` to /predict once; return status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_gunicorn(target: str, port: int, store: Path, log_path: Path,
                   body: bytes = BODY) -> tuple[subprocess.Popen, float]:
    """Start gunicorn with the project's config; return the process and the seconds to the first 200."""
    env = {**os.environ, "PORT": str(port), "MODEL_STORE": str(store), "LOG_FORMAT": "json"}
    started = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", target],
                            cwd=REPO_ROOT, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    while time.perf_counter() - started < 30:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log_path}")
        try:
            if post(port, body, timeout=1)[0] == 200:
                return proc, time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.005)
    proc.terminate()
    raise TimeoutError(f"{target} gave no 200 within 30 s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    """Stop gunicorn gracefully."""
    proc.terminate()
    proc.wait(timeout=30)


def run_wrk(port: int, body: bytes = BODY) -> dict:
    """Drive /predict with wrk; return requests, seconds, p50_ms, p99_ms, errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % body.decode())
        script.flush()
        out = subprocess.run(["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{SECONDS:g}s", "-s", script.name,
                              f"http://127.0.0.1:{port}/predict"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


async def _connection(port: int, deadline: float, latencies: list[float], body: bytes = BODY) -> int:
    """Send requests over one keep-alive connection until `deadline`; return the error count."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    errors = 0
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - sent)
        errors += not head.startswith(b"HTTP/1.1 200")
        if b"connection: close" in head.lower():
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    return errors


def _python_load_process(port: int, connections: int, queue: multiprocessing.Queue, body: bytes) -> None:
    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        deadline = time.perf_counter() + SECONDS
        results = await asyncio.gather(*(_connection(port, deadline, latencies, body) for _ in range(connections)),
                                       return_exceptions=True)
        return latencies, sum(r if isinstance(r, int) else 1 for r in results)

    queue.put(asyncio.run(main()))


def run_python_load(port: int, body: bytes = BODY) -> dict:
    """Drive /predict with asyncio connections spread over one process per CPU."""
    processes = max(1, min(os.cpu_count() or 1, 4))
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_python_load_process,
                                       args=(port, CONNECTIONS // processes, queue, body))
               for _ in range(processes)]
    for w in workers:
        w.start()
    latencies, errors = [], 0
    for _ in workers:
        part, err = queue.get()
        latencies += part
        errors += err
    for w in workers:
        w.join()
    quantiles = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "seconds": SECONDS, "p50_ms": quantiles[49] * 1000,
            "p99_ms": quantiles[98] * 1000, "errors": errors}


def batch_ms(port: int, size: int) -> float:
    """Median loopback round trip of one /predict call with `size` instances."""
    body = json.dumps({"instances": [{c: 1000.0 + i for c in CHANNELS} for i in range(size)]}).encode()
    times = []
    for _ in range(6):
        started = time.perf_counter()
        status, _ = post(port, body)
        times.append(time.perf_counter() - started)
        assert status == 200, status
    return statistics.median(times[1:]) * 1000


def combine(rounds: list[dict]) -> dict:
    """Sum requests, seconds and errors over rounds; take the median round's p50 and p99."""
    return {"requests": sum(r["requests"] for r in rounds), "seconds": sum(r["seconds"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds)}


def main() -> None:
    """Run the benchmark and print the table."""
    generator = "wrk" if shutil.which("wrk") else "python-asyncio"
    load = run_wrk if generator == "wrk" else run_python_load
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        store, mmm_store = workdir / "store", workdir / "mmm-store"
        version = publish_model(store)
        mmm_version, fit_seconds, mmm_body = publish_mmm(mmm_store)
        port, ceiling_port, mmm_port = free_port(), free_port(), free_port()
        api, cold_start = start_gunicorn("app:create_app()", port, store, workdir / "api.log")
        mmm_api, mmm_cold_start = start_gunicorn("app:create_app()", mmm_port, mmm_store, workdir / "mmm.log",
                                                 mmm_body)
        ceiling, _ = start_gunicorn("bench.ceiling_app:app", ceiling_port, store, workdir / "ceiling.log")
        try:
            # Alternate short rounds so that other load on the machine hits every side alike, and rotate their
            # order each round so that no side always follows the same one.
            api_rounds, ceiling_rounds, mmm_rounds = [], [], []
            sides = [(api_rounds, port, BODY), (ceiling_rounds, ceiling_port, BODY), (mmm_rounds, mmm_port, mmm_body)]
            for round_number in range(ROUNDS):
                for rounds, side_port, side_body in sides[round_number % 3:] + sides[:round_number % 3]:
                    rounds.append(load(side_port, side_body))
            batches = {size: batch_ms(port, size) for size in (1_000, 10_000)}
            allocation = allocate_latency(mmm_port, mmm_store)
            attacks = [slow_upload_attack(port, BODY, slow, seconds=ATTACK_SECONDS) for slow in (0, 8, 64)]
        finally:
            stop(api)
            stop(mmm_api)
            stop(ceiling)
    api_load, ceiling_load, mmm_load = combine(api_rounds), combine(ceiling_rounds), combine(mmm_rounds)

    def rate(result: dict) -> float:
        return result["requests"] / result["seconds"]

    print(f"bench-serve: models {version} (ols, 4 channels) and {mmm_version} (mmm, 10 channels, fitted in "
          f"{fit_seconds:.1f} s), load generator {generator}, {CONNECTIONS} connections, {ROUNDS} alternating rounds "
          f"of {SECONDS:g} s per endpoint, {os.cpu_count()} CPUs shared with the generator, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'endpoint':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, result in (("/predict (ols)", api_load), ("/predict (mmm)", mmm_load),
                         ("ceiling (const JSON)", ceiling_load)):
        print(f"{name:<22}{rate(result):>10.0f}{result['p50_ms']:>9.2f}{result['p99_ms']:>9.2f}{result['errors']:>8}")
    for name, rounds, combined in (("ols", api_rounds, api_load), ("mmm", mmm_rounds, mmm_load)):
        ratios = [rate(a) / rate(c) for a, c in zip(rounds, ceiling_rounds, strict=True)]
        print(f"ratio /predict ({name}) ÷ ceiling: {rate(combined) / rate(ceiling_load):.2f} over all rounds, "
              f"{statistics.median(ratios):.2f} median of rounds {' '.join(f'{r:.2f}' for r in ratios)}  "
              "(target >= 0.90)")
    print(f"p99 /predict: ols {api_load['p99_ms']:.2f} ms, mmm {mmm_load['p99_ms']:.2f} ms  (target <= 10 ms; "
          f"ceiling {ceiling_load['p99_ms']:.2f} ms)")
    print(f"/allocate, 10 channels, {ALLOCATE_REQUESTS} sequential requests: p50 {allocation['p50_ms']:.1f} ms, "
          f"p99 {allocation['p99_ms']:.1f} ms (target p50 <= 20 ms); the same in-process: p50 "
          f"{allocation['core_p50_ms']:.1f} ms, p99 {allocation['core_p99_ms']:.1f} ms (HTTP's share of the p50: "
          f"{1 - allocation['core_p50_ms'] / allocation['p50_ms']:.0%})")
    print(f"batch of 1,000 instances: {batches[1_000]:.1f} ms; of 10,000: {batches[10_000]:.1f} ms  "
          "(target <= 50 ms; loopback round trip)")
    print(f"cold start (process start → first 200 from /predict): ols {cold_start:.2f} s, mmm {mmm_cold_start:.2f} s  "
          "(target <= 1.0 s)")
    print(f"slow uploads ({ATTACK_SECONDS:g} s each; 4 normal clients, a 200 within 1 s counts as answered; "
          "target >= 99% answered):")
    print(f"{'slow clients':<14}{'normal sent':>12}{'answered':>10}{'share':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for attack in attacks:
        print(f"{attack.slow_clients:<14}{attack.sent:>12}{attack.answered:>10}{attack.answered_share:>8.1%}"
              f"{attack.percentile_ms(50):>9.2f}{attack.percentile_ms(99):>9.2f}")


if __name__ == "__main__":
    main()
