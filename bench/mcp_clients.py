"""MCP `tools/call` latency with real clients: direct to an upstream, through airlock, and through two
other gateways, all in one run. Started by bench/mcp_clients.sh (which installs the peers and builds
airlock first); method and figures in docs/BENCHMARKS.md.

Targets (each on 127.0.0.1, on a port chosen at run time):
  direct         server-everything in streamable-HTTP mode
  airlock-http   airlock with that same HTTP server as its upstream (policy, durable journal)
  airlock-stdio  airlock with server-everything over stdio as its upstream
  supergateway   stdio server-everything behind supergateway (stdio -> streamable HTTP, --stateful)
  mcp-proxy      stdio server-everything behind mcp-proxy (its streamable-HTTP server mode)
and, with --explore, variants that show where airlock's time goes:
  airlock-http-tmpfs  airlock-http with its journal on a tmpfs (/dev/shm): same SQL, free fsync
  api-upstream        airlock's HTTP API (POST /v1/sessions/{id}/actions) running the same upstream
                      tool: decision, journal and upstream call without the MCP front (raw client)
  api-agent           the HTTP API with an agent-executed tool: decision and journal only (raw client)
  direct-reconnect    direct, but a new TCP connection for every call (raw client): what an upstream
                      spends on a connection, as airlock's HTTP upstream client opens one per call

Clients: the official TypeScript SDK (ts-sdk), the official Python SDK (py-sdk) and a plain
HTTP/1.1 keep-alive JSON-RPC client (raw-http). Each client run, one process per client, target and
round: connect + initialize, warm up, N sequential calls of server-everything's `echo`, each timed;
then S new sessions calling at once, M calls each. Rounds repeat every client x target pair, the
targets in a rotated order each round, so slow spells of a shared machine spread over all of them.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests/interop"
PEERS = ROOT / "bench/peers"
CLIENTS_DIR = ROOT / "bench/clients"
NODE = INTEROP / "node_modules/.bin/node"
EVERYTHING = INTEROP / "node_modules/.bin/mcp-server-everything"
LOOPBACK = INTEROP / "loopback.cjs"
SUPERGATEWAY = PEERS / "node_modules/.bin/supergateway"
MCP_PROXY = PEERS / ".venv-mcp-proxy/bin/mcp-proxy"
PY_SDK_PYTHON = INTEROP / ".venv/bin/python"

MAIN_TARGETS = ["direct", "airlock-http", "airlock-stdio", "supergateway", "mcp-proxy"]
EXPLORE_TARGETS = ["airlock-http-tmpfs", "api-upstream", "api-agent", "direct-reconnect"]
ALL_CLIENTS = ["ts-sdk", "py-sdk", "raw-http"]
# The raw client only: airlock's HTTP API (not MCP), and a new connection per call.
RAW_ONLY_TARGETS = {"api-upstream", "api-agent", "direct-reconnect"}

POLICY = """package airlock

import rego.v1

# Evaluated on every call, never matches the benchmark's calls: they are allowed.
deny contains {"rule": "B1", "msg": "not in the benchmark"} if input.action.arguments.message == "forbidden"

deny contains {"rule": "B2", "msg": "not in the benchmark"} if input.action.tool == "db.drop"
"""


def log(msg: str) -> None:
    print(f"mcp_clients: {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# --- processes --------------------------------------------------------------------------------

STARTED: list[subprocess.Popen] = []


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children that left its process group included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def spawn(argv: list[str], *, log_to: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Starts a server. It stays in this process's group, so a signal to the group (Ctrl-C, or
    mcp_clients.sh's trap) reaches it too; `stop` ends it and everything it started."""
    with open(log_to, "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    STARTED.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM to the process and every descendant (children that made their own process group
    included); SIGKILL to what is left after `grace`."""
    pids = ([p.pid] if p.poll() is None else []) + descendants(p.pid)

    def signal_all(sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if p.poll() is not None and not any(alive(pid) for pid in pids):
            break
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if p in STARTED:
        STARTED.remove(p)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_all() -> None:
    for p in reversed(list(STARTED)):
        stop(p)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU time of these processes and all their descendants, all threads."""
    total = 0
    for pid in {*roots, *(d for r in roots for d in descendants(r))}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / CLOCK_TICKS


def on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def wait_for_line(path: Path, prefix: str, proc: subprocess.Popen, timeout: float = 60) -> str:
    """The rest of the first line of `path` that starts with `prefix`, once a process wrote it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}); its log {path}:\n{tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"no line starting with {prefix!r} in {path} after {timeout:g} s:\n{tail(path)}")


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:g} s ({last})")


# --- targets ----------------------------------------------------------------------------------


class Run:
    def __init__(self, tmp: Path, airlock: Path) -> None:
        self.tmp = tmp
        self.airlock = airlock
        self.token = "bench-agent-" + secrets.token_hex(16)
        self.admin = "bench-admin-" + secrets.token_hex(16)
        self.node_env = {**os.environ, "PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}"}
        self.node_env.pop("NODE_OPTIONS", None)
        self.targets: dict[str, dict[str, Any]] = {}
        self.tmpfs_dirs: list[Path] = []

    def everything_stdio(self) -> list[str]:
        return [str(NODE), str(EVERYTHING)]

    def start_direct(self) -> dict[str, Any]:
        logf = self.tmp / "everything-http.log"
        env = {**self.node_env, "PORT": "0", "NODE_OPTIONS": f"--require {LOOPBACK}"}
        p = spawn([str(NODE), str(EVERYTHING), "streamableHttp"], log_to=logf, env=env)
        addr = wait_for_line(logf, "airlock-interop: listening on ", p)
        return {"url": f"http://{addr}/mcp", "tool": "echo", "token": None, "pids": [p.pid]}

    def airlock_config(self, name: str, upstream: str, data_dir: str) -> Path:
        d = self.tmp / name
        (d / "policies").mkdir(parents=True)
        (d / "policies/main.rego").write_text(POLICY)
        sha = lambda t: "sha256:" + hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
        (d / "airlock.toml").write_text(f"""# Written by bench/mcp_clients.py for one benchmark run.
[server]
listen = "127.0.0.1:0"
data_dir = {json.dumps(data_dir)}

[policy]
dir = "policies"

# The benchmark repeats one call: no loop detection, no rate limit.
[guards]
loop_repeats = 0
actions_per_minute = 0

[[agents]]
id = "bench"
token = "{sha(self.token)}"
owner = "bench"
tier = "autonomous"

[[humans]]
id = "admin"
token = "{sha(self.admin)}"
roles = ["admin"]

{upstream}
""")
        return d / "airlock.toml"

    def start_airlock(self, name: str, upstream: str, upstream_name: str, data_dir: str = "data") -> dict[str, Any]:
        config = self.airlock_config(name, upstream, data_dir)
        logf = self.tmp / f"{name}.log"
        env = {**self.node_env, "RUST_LOG": "warn"}
        for k in ("AIRLOCK_TOKEN", "AIRLOCK_SERVER", "AIRLOCK_CONFIG"):
            env.pop(k, None)
        p = spawn([str(self.airlock), "serve", "--config", str(config)], log_to=logf, env=env)
        base = wait_for_line(logf, "airlock listening on ", p)

        def up() -> bool:
            status, body = http_get(f"{base}/v1/upstreams", self.admin)
            return status == 200 and any(
                u.get("name") == upstream_name and u.get("state") == "up" for u in json.loads(body)["upstreams"]
            )

        wait_until(f"{name}: upstream {upstream_name}", up)
        return {"url": f"{base}/mcp", "base": base, "tool": f"{upstream_name}__echo", "token": self.token, "pids": [p.pid]}

    def start_supergateway(self) -> dict[str, Any]:
        logf = self.tmp / "supergateway.log"
        env = {**self.node_env, "NODE_OPTIONS": f"--require {LOOPBACK}"}
        p = spawn(
            [str(NODE), str(SUPERGATEWAY), "--stdio", shlex.join(self.everything_stdio()),
             "--outputTransport", "streamableHttp", "--stateful", "--port", "0", "--logLevel", "none"],
            log_to=logf, env=env,
        )
        addr = wait_for_line(logf, "airlock-interop: listening on ", p)
        return {"url": f"http://{addr}/mcp", "tool": "echo", "token": None, "pids": [p.pid]}

    def start_mcp_proxy(self) -> dict[str, Any]:
        logf = self.tmp / "mcp-proxy.log"
        port = free_port()
        env = {**self.node_env}
        p = spawn(
            [str(MCP_PROXY), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING",
             "--", *self.everything_stdio()],
            log_to=logf, env=env,
        )

        def ready() -> bool:
            if p.poll() is not None:
                raise RuntimeError(f"mcp-proxy exited ({p.returncode}):\n{tail(logf)}")
            return http_get(f"http://127.0.0.1:{port}/status")[0] == 200

        wait_until("mcp-proxy", ready)
        return {"url": f"http://127.0.0.1:{port}/mcp", "tool": "echo", "token": None, "pids": [p.pid]}

    def start(self, names: list[str]) -> None:
        need_direct = {"direct", "direct-reconnect", "airlock-http", "airlock-http-tmpfs", "api-upstream", "api-agent"} & set(names)
        if need_direct:
            self.targets["direct"] = self.start_direct()
            self.targets["direct-reconnect"] = {**self.targets["direct"], "reconnect": True}
            log(f"direct: server-everything (streamable HTTP) at {self.targets['direct']['url']}")
        web = f'[[upstreams]]\nname = "web"\nurl = "{self.targets["direct"]["url"]}"\n' if need_direct else ""
        if {"airlock-http", "api-upstream", "api-agent"} & set(names):
            t = self.start_airlock("airlock-http", web, "web")
            # The server side of a call through airlock-http is airlock and its upstream.
            with_upstream = t["pids"] + self.targets["direct"]["pids"]
            self.targets["airlock-http"] = {**t, "pids": with_upstream}
            self.targets["api-upstream"] = {"url": t["base"], "tool": "web__echo", "token": self.token, "api": True,
                                            "pids": with_upstream}
            self.targets["api-agent"] = {"url": t["base"], "tool": "bench.noop", "token": self.token, "api": True,
                                         "pids": t["pids"]}
            log(f"airlock-http: {t['url']} -> web ({self.targets['direct']['url']})")
        if "airlock-http-tmpfs" in names:
            shm = Path(tempfile.mkdtemp(prefix="airlock-mcp-bench-", dir="/dev/shm"))
            self.tmpfs_dirs.append(shm)
            t = self.start_airlock("airlock-http-tmpfs", web, "web", str(shm))
            self.targets["airlock-http-tmpfs"] = {**t, "pids": t["pids"] + self.targets["direct"]["pids"]}
            log(f"airlock-http-tmpfs: {self.targets['airlock-http-tmpfs']['url']} (journal in {shm})")
        if "airlock-stdio" in names:
            stdio = (
                f'[[upstreams]]\nname = "stdio"\ncommand = {json.dumps(str(NODE))}\n'
                f"args = [{json.dumps(str(EVERYTHING))}]\n"
            )
            self.targets["airlock-stdio"] = self.start_airlock("airlock-stdio", stdio, "stdio")
            log(f"airlock-stdio: {self.targets['airlock-stdio']['url']} -> server-everything over stdio")
        if "supergateway" in names:
            self.targets["supergateway"] = self.start_supergateway()
            log(f"supergateway: {self.targets['supergateway']['url']}")
        if "mcp-proxy" in names:
            self.targets["mcp-proxy"] = self.start_mcp_proxy()
            log(f"mcp-proxy: {self.targets['mcp-proxy']['url']}")

    def cleanup(self) -> None:
        stop_all()
        for d in self.tmpfs_dirs:
            shutil.rmtree(d, ignore_errors=True)


# --- clients ----------------------------------------------------------------------------------


def client_argv(client: str, target: dict[str, Any], opts: argparse.Namespace) -> list[str]:
    common = ["--url", target["url"], "--tool", target["tool"], "--args", json.dumps({"message": "bench"}),
              "--calls", str(opts.calls), "--warmup", str(opts.warmup), "--sessions", str(opts.sessions),
              "--conc-calls", str(opts.conc_calls)]
    if target.get("token"):
        common += ["--token", target["token"]]
    if client == "ts-sdk":
        return [str(NODE), str(CLIENTS_DIR / "ts_sdk.mjs"), *common]
    if client == "py-sdk":
        return [str(PY_SDK_PYTHON), str(CLIENTS_DIR / "py_sdk.py"), *common, "--mode", opts.py_mode]
    if client == "raw-http":
        return [sys.executable, str(CLIENTS_DIR / "raw_http.py"), *common,
                *(["--api"] if target.get("api") else []), *(["--reconnect"] if target.get("reconnect") else [])]
    raise ValueError(client)


def run_client(client: str, target_name: str, target: dict[str, Any], opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    logf = tmp / f"client-{client}-{target_name}.log"
    out = tmp / f"client-{client}-{target_name}.out"
    with open(out, "wb") as o, open(logf, "ab") as e:
        p = subprocess.Popen(client_argv(client, target, opts), stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    STARTED.append(p)
    try:
        p.wait(timeout=opts.client_timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        raise RuntimeError(f"{client} against {target_name} did not finish in {opts.client_timeout} s:\n{tail(logf)}")
    STARTED.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"{client} against {target_name} failed ({p.returncode}):\n{tail(logf)}")
    result = json.loads(out.read_text().strip().splitlines()[-1])
    if result.get("errors"):
        raise RuntimeError(f"{client} against {target_name}: {result['errors']} calls returned isError")
    return result


# --- statistics and output --------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))
    return s[int(i)]


def summarise(rounds: dict[tuple[str, str, str], list[dict[str, Any]]], clients: list[str], targets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for client in clients:
        for mode in ("seq", "conc"):
            direct_rounds = rounds.get((client, "direct", mode))
            for target in targets:
                rs = rounds.get((client, target, mode))
                if not rs:
                    continue
                lat = [x for r in rs for x in r["lat_ms"]]
                calls = len(lat)
                wall = sum(r["wall_s"] for r in rs)
                row = {
                    "client": client, "target": target, "mode": mode,
                    "sessions": rs[0].get("sessions", 1),
                    "calls": calls,
                    "p50_ms": percentile(lat, 50),
                    "p99_ms": percentile(lat, 99),
                    "calls_per_s": calls / wall if wall else float("nan"),
                    "round_p50_ms": [percentile(r["lat_ms"], 50) for r in rs],
                }
                if direct_rounds and target != "direct":
                    # Against direct in the same round, then the median over rounds.
                    pairs = list(zip(row["round_p50_ms"], (percentile(r["lat_ms"], 50) for r in direct_rounds)))
                    row["p50_ratio_vs_direct"] = statistics.median(t / d for t, d in pairs)
                    row["p50_diff_ms_vs_direct"] = statistics.median(t - d for t, d in pairs)
                rows.append(row)
    return rows


TIMERS = {
    "airlock_decision_duration_seconds": "decision",
    "airlock_policy_evaluation_seconds": "policy",
    "airlock_upstream_call_duration_seconds": "upstream call",
}


def airlock_timers(base: str) -> dict[str, float]:
    """Means (ms) of airlock's own duration histograms at /metrics: how long decisions (with their
    durable commit), policy evaluations and upstream calls took, over every call so far."""
    status, body = http_get(f"{base}/metrics")
    if status != 200:
        return {}
    acc: dict[str, list[float]] = {}
    for line in body.decode(errors="replace").splitlines():
        for metric, label in TIMERS.items():
            for part in ("sum", "count"):
                if line.startswith(f"{metric}_{part}"):
                    acc.setdefault(label, [0.0, 0.0])[part == "count"] += float(line.rsplit(" ", 1)[1])
    return {label: s / n * 1000 for label, (s, n) in acc.items() if n}


def print_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    print()
    print(f"MCP tools/call latency, {meta['rounds']} rounds; per round {meta['calls']} sequential calls and "
          f"{meta['sessions']} sessions x {meta['conc_calls']} concurrent calls per client and target")
    print(f"load average at start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, at end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} "
          f"({os.cpu_count()} CPUs)")
    if meta.get("load_wait"):
        print(f"load wait: {meta['load_wait']}")
    for r in meta.get("retried", []):
        print(f"retried once: {r['client']} against {r['target']} in round {r['round']}: {r['error'].splitlines()[-1]}")
    head = ["client", "target", "sessions", "calls", "p50 ms", "p99 ms", "calls/s", "p50 x direct", "p50 - direct ms",
            "server CPU/call"]
    lines = []
    for r in rows:
        lines.append([
            r["client"], r["target"], str(r["sessions"]), str(r["calls"]),
            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['calls_per_s']:.0f}",
            f"{r['p50_ratio_vs_direct']:.2f}" if "p50_ratio_vs_direct" in r else "-",
            f"{r['p50_diff_ms_vs_direct']:+.2f}" if "p50_diff_ms_vs_direct" in r else "-",
            f"{r['server_cpu_us_per_call']:.0f} us" if r.get("server_cpu_us_per_call") else "-",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    print(fmt(head))
    print(fmt(["-" * w for w in widths]))
    last = None
    for r, line in zip(rows, lines):
        key = (r["client"], r["mode"])
        if last is not None and key != last:
            print()
        last = key
        print(fmt(line))
    for name, timers in meta.get("airlock_timers_ms", {}).items():
        if timers:
            print(f"{name}: airlock's own timers, mean per call over the run: "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in timers.items()))
    print("(p50 x direct and p50 - direct: against direct in the same round, median over rounds. server CPU/call:\n"
          " user + system CPU of the target's processes (gateway, its children, and the upstream it calls) over\n"
          " whole client runs, handshakes and warm-up included, divided by the calls made; same for both rows)")


def versions(airlock: Path) -> dict[str, str]:
    def npm_version(pkg_json: Path) -> str:
        try:
            return json.loads(pkg_json.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "?"

    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    nm = INTEROP / "node_modules"
    return {
        "airlock": out([str(airlock), "--version"]),
        "airlock_commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "node": out([str(NODE), "--version"]),
        "typescript_sdk": npm_version(nm / "@modelcontextprotocol/sdk/package.json"),
        "python_sdk": out([str(PY_SDK_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mcp'))"]),
        "server_everything": npm_version(nm / "@modelcontextprotocol/server-everything/package.json"),
        "supergateway": npm_version(PEERS / "node_modules/supergateway/package.json"),
        "mcp_proxy": out([str(MCP_PROXY.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('mcp-proxy'))"]),
        "python": sys.version.split()[0],
    }


def wait_for_load(threshold: float, max_s: float, every_s: float = 30) -> str:
    started = time.monotonic()
    while True:
        one = loadavg()[0]
        waited = time.monotonic() - started
        if one < threshold:
            return f"1-minute load {one:.2f} < {threshold} after {waited:.0f} s of waiting"
        if waited >= max_s:
            return f"gave up after {waited:.0f} s: 1-minute load still {one:.2f} (>= {threshold}); ran anyway"
        log(f"1-minute load average {one:.2f} >= {threshold}; checking again in {every_s:g} s")
        time.sleep(every_s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--airlock", required=True, type=Path, help="the airlock binary (release build)")
    p.add_argument("--calls", type=int, default=int(os.environ.get("N", 100)),
                   help="sequential timed calls per client, target and round (default 100, or $N)")
    p.add_argument("--conc-calls", type=int, default=25, help="calls per session in the concurrent phase (default 25)")
    p.add_argument("--sessions", type=int, default=8, help="sessions in the concurrent phase (default 8; 0 skips it)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over every client x target (default 3)")
    p.add_argument("--clients", default=",".join(ALL_CLIENTS), help=f"comma-separated, of {','.join(ALL_CLIENTS)}")
    p.add_argument("--targets", default=",".join(MAIN_TARGETS),
                   help=f"comma-separated, of {','.join(MAIN_TARGETS + EXPLORE_TARGETS)} (direct is always added)")
    p.add_argument("--explore", action="store_true", help="add the where-the-time-goes targets " + ",".join(EXPLORE_TARGETS))
    p.add_argument("--py-mode", default="auto", help="the Python SDK's protocol mode (default auto, the SDK's default)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="also write the results as JSON to FILE (- or no value: stdout, instead of the table)")
    p.add_argument("--wait-load", type=float, metavar="LOAD",
                   help="before measuring, wait until the 1-minute load average is below LOAD (checked every 30 s)")
    p.add_argument("--wait-max", type=float, default=1200, metavar="SECONDS", help="longest wait for --wait-load (default 1200)")
    p.add_argument("--client-timeout", type=float, default=600)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, journals)")
    opts = p.parse_args()

    clients = [c for c in opts.clients.split(",") if c]
    targets = [t for t in opts.targets.split(",") if t]
    if opts.explore:
        targets += [t for t in EXPLORE_TARGETS if t not in targets]
    if "direct" not in targets:
        targets.insert(0, "direct")
    for c in clients:
        if c not in ALL_CLIENTS:
            p.error(f"unknown client {c}")
    for t in targets:
        if t not in MAIN_TARGETS + EXPLORE_TARGETS:
            p.error(f"unknown target {t}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="airlock-mcp-bench-"))
    run = Run(tmp, opts.airlock.resolve())
    meta: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rounds": opts.rounds, "calls": opts.calls, "sessions": opts.sessions, "conc_calls": opts.conc_calls,
        "warmup": opts.warmup, "clients": clients, "targets": targets, "py_mode": opts.py_mode,
    }
    try:
        meta["versions"] = versions(run.airlock)
        if opts.wait_load:
            meta["load_wait"] = wait_for_load(opts.wait_load, opts.wait_max)
            log(meta["load_wait"])
        meta["loadavg_start"] = loadavg()
        log(f"load average {meta['loadavg_start']}; starting the targets (logs in {tmp})")
        run.start(targets)
        rounds: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        cpu_use: dict[tuple[str, str], list[float]] = {}
        meta["loadavg_rounds"] = []
        meta["retried"] = []
        for r in range(opts.rounds):
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for client in clients:
                for target in order:
                    if target in RAW_ONLY_TARGETS and client != "raw-http":
                        continue
                    cpu0 = cpu_seconds(run.targets[target]["pids"])
                    try:
                        res = run_client(client, target, run.targets[target], opts, tmp)
                    except RuntimeError as e:
                        # Once, a client run may fail for a reason of its own (kept in the JSON
                        # output); the second failure of the same run ends the benchmark.
                        log(f"round {r + 1}: {e}\nmcp_clients: trying {client} against {target} once more")
                        meta["retried"].append({"round": r + 1, "client": client, "target": target, "error": str(e)})
                        res = run_client(client, target, run.targets[target], opts, tmp)
                    # Server CPU over the whole client run (both phases, warm-up and handshakes too).
                    cpu = cpu_seconds(run.targets[target]["pids"]) - cpu0
                    warm_conc = max(1, (opts.warmup + 1) // 2) if "conc" in res else 0
                    n = opts.warmup + opts.calls + (opts.sessions * (warm_conc + opts.conc_calls) if "conc" in res else 0)
                    acc = cpu_use.setdefault((client, target), [0.0, 0])
                    acc[0] += cpu
                    acc[1] += n
                    rounds.setdefault((client, target, "seq"), []).append({**res["seq"], "sessions": 1})
                    if "conc" in res:
                        rounds.setdefault((client, target, "conc"), []).append(res["conc"])
                    log(f"round {r + 1}/{opts.rounds} {client:8} {target:18} seq p50 "
                        f"{percentile(res['seq']['lat_ms'], 50):7.2f} ms"
                        + (f", {res['conc']['sessions']} sessions p50 {percentile(res['conc']['lat_ms'], 50):7.2f} ms"
                           if "conc" in res else ""))
            meta["loadavg_rounds"].append(loadavg())
        meta["loadavg_end"] = loadavg()
        meta["airlock_timers_ms"] = {
            name: airlock_timers(t["base"]) for name, t in run.targets.items() if name.startswith("airlock") and "base" in t
        }
        rows = summarise(rounds, clients, targets)
        for row in rows:
            cpu, n = cpu_use.get((row["client"], row["target"]), (0.0, 0))
            row["server_cpu_us_per_call"] = cpu / n * 1e6 if n else None
        doc = {"meta": meta, "results": rows}
        if opts.json == "-":
            print(json.dumps(doc, indent=1))
        else:
            print_table(rows, meta)
            if opts.json:
                Path(opts.json).write_text(json.dumps(doc, indent=1) + "\n")
                log(f"JSON written to {opts.json}")
        return 0
    except (RuntimeError, OSError) as e:
        log(f"failed: {e}")
        return 1
    except (SystemExit, KeyboardInterrupt):
        log("interrupted: stopping every process this run started")
        raise
    finally:
        run.cleanup()
        if opts.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
