#!/usr/bin/env python3
"""popgate vs nginx vs bare pingora doing the same job, in the same run.

nginx and popgate terminate mutual TLS with the same CA, server certificate
and client certificate, rate-limit per client certificate (set high enough
never to trigger), write a per-request log, and proxy to the same upstream
(popgate's synthetic registry). Bare pingora (gateway/examples/bare_pingora.rs)
is the ceiling popgate is built on: the same pingora + rustls, mTLS with the
same CA and CRL, HTTP/1.1 + h2, the same upstream, and nothing else. TLS
session resumption is off on all three (oha's client would resume). The
upstream is also measured directly. All get the same number of worker threads.

Modes: keep-alive (many requests per connection) and a new TLS connection
per request, with a fixed number of connections (oha). Each server is run
`--rounds` times, alternating with the others so drift on a shared machine
hits all of them alike; the medians are reported. For each: req/s,
p50/p99/p99.9 latency, server CPU seconds per 1,000 requests, peak RSS, and
the popgate/nginx and popgate/bare-pingora ratios, popgate with its audit
log durable (fdatasync before every response, group commit) and relaxed.
Then memory with N idle mTLS connections held open: right after the
handshake, and after each connection has served one request (keep-alive
idle).

Run from the repository root (as root, for apt-get and the file limit):
    python3 bench/gateway_vs_nginx.py [--seconds 8] [--rounds 3] [--connections 32] [--idle 10000]
Writes bench/results/gateway.json.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITIZEN_PATH = "/v1/citizens/001203012345"
THREADS = 2


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    if not shutil.which("nginx"):
        sh(["apt-get", "install", "-y", "-qq", "nginx"])
    if not shutil.which("oha") and not os.path.exists(os.path.expanduser("~/.cargo/bin/oha")):
        sh(["cargo", "install", "oha", "--locked"])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    sh(["cargo", "build", "--release", "-q", "-p", "popgate"], cwd=ROOT)
    sh(["cargo", "build", "--release", "-q", "-p", "gateway", "--example", "bare_pingora"], cwd=ROOT)
    return (os.path.join(target, "release", "popgate"),
            os.path.join(target, "release", "examples", "bare_pingora"),
            shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def proc_tree(pid):
    """pid and all its descendants."""
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        kids = []
    for k in kids:
        out.extend(proc_tree(int(k)))
    return out


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def status_kb(pids, key):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(self, name, argv, port, cwd):
        self.name = name
        self.port = port
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        time.sleep(0.3)

    def pids(self):
        return proc_tree(self.p.pid)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def write_setup(tmp, popgate):
    pki = os.path.join(tmp, "pki")
    # Agencies without quotas other than one rate limit set far above any load:
    # the same job nginx's limit_req does below.
    agencies = open(os.path.join(ROOT, "policies/agencies.yaml")).read()
    agencies = agencies.replace(
        "    purpose_required: true\n    allow: [citizen.read, citizen.residence]\n\n  - id: gialai",
        "    purpose_required: true\n    allow: [citizen.read, citizen.residence]\n    quota: { rate: 1000000, burst: 1000000 }\n\n  - id: gialai",
        1,
    )
    with open(os.path.join(tmp, "agencies.yaml"), "w") as f:
        f.write(agencies)
    sh([popgate, "pki", "init", "--dir", pki, "--agencies", os.path.join(tmp, "agencies.yaml")],
       stdout=subprocess.DEVNULL)
    return pki


def popgate_config(tmp, port, upstream, durability, name):
    audit = os.path.join(tmp, f"audit-{name}")
    shutil.rmtree(audit, ignore_errors=True)
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"""listen: 127.0.0.1:{port}
threads: {THREADS}
tls: {{cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem, crls: [pki/crl.pem]}}
upstream: {{url: 'http://127.0.0.1:{upstream}'}}
registry: agencies.yaml
audit:
  dir: {audit}
  hmac_key: pki/audit-hmac.key
  seal_key: pki/audit-seal.key
  durability: {durability}
quota: {{state_dir: quota-{name}}}
# The idle measurement holds 10,000 silent connections from one agency for
# longer than 10 s; popgate's defaults would close them (64 per agency,
# 10 s to send a request head). Lift both so memory per connection is
# measured like nginx's.
limits: {{header_timeout_ms: 120000, max_connections_per_agency: 20000}}
""")
    return path


def nginx_config(tmp, port, upstream):
    path = os.path.join(tmp, "nginx.conf")
    pki = os.path.join(tmp, "pki")
    log = os.path.join(tmp, "nginx-access.json")
    with open(path, "w") as f:
        f.write(f"""user root;
worker_processes {THREADS};
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  log_format audit escape=json '{{"time":"$time_iso8601","agency":"$ssl_client_s_dn","serial":"$ssl_client_serial","method":"$request_method","uri":"$request_uri","status":$status,"bytes":$body_bytes_sent,"request_time":$request_time,"upstream_time":"$upstream_response_time"}}';
  limit_req_zone $ssl_client_s_dn zone=agency:10m rate=1000000r/s;
  upstream registry {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/server.pem;
    ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.pem;
    ssl_crl {pki}/crl.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    keepalive_requests 1000000;
    access_log {log} audit;
    location / {{
      limit_req zone=agency burst=1000000 nodelay;
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Agency-Id $ssl_client_s_dn;
    }}
  }}
}}
""")
    return path


def oha(oha_bin, url, seconds, conns, pki, keepalive, tls=True):
    cmd = [oha_bin, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
           "-H", "X-Purpose: benchmark"]
    if tls:
        cmd += ["--cacert", f"{pki}/ca.pem", "--cert", f"{pki}/agencies/hanoi.pem",
                "--key", f"{pki}/agencies/hanoi.key"]
    if not keepalive:
        cmd.append("--disable-keepalive")
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr[:500]}")
    return json.loads(out.stdout)


def measure(server, oha_bin, url, seconds, conns, pki, keepalive, tls=True):
    pids = server.pids() if server else []
    cpu0 = cpu_seconds(pids)
    r = oha(oha_bin, url, seconds, conns, pki, keepalive, tls)
    cpu1 = cpu_seconds(pids)
    summary = r.get("summary", {})
    pct = r.get("latencyPercentiles", {})
    codes = r.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    return {
        "rps": summary.get("requestsPerSec", 0.0),
        "ok_ratio": (ok / total) if total else 0.0,
        "requests": total,
        "p50_ms": (pct.get("p50") or 0) * 1000,
        "p99_ms": (pct.get("p99") or 0) * 1000,
        "p999_ms": (pct.get("p99.9") or 0) * 1000,
        "cpu_s_per_1k": ((cpu1 - cpu0) / total * 1000) if total else None,
        "peak_rss_mb": status_kb(pids, "VmHWM") / 1024 if pids else None,
        "status_codes": codes,
        "errors": r.get("errorDistribution", {}),
    }


def one_request(tls):
    """Sends one keep-alive GET and reads its whole response."""
    tls.sendall(f"GET {CITIZEN_PATH} HTTP/1.1\r\nHost: localhost\r\nX-Purpose: benchmark\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            raise OSError("closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                   if l.lower().startswith(b"content-length:")), None)
    if length is None:
        raise OSError("response without Content-Length")
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            raise OSError("closed inside the response body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(head.split(b"\r\n", 1)[0].decode())


def idle_connections(port, pki, n, server, after_request=False):
    """Opens n mTLS connections, completes the handshake (and, with
    after_request, one request on each), holds them idle, and reports the
    server's RSS growth per connection."""
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.pem")
    ctx.load_cert_chain(f"{pki}/agencies/hanoi.pem", f"{pki}/agencies/hanoi.key")
    ctx.check_hostname = False
    base = status_kb(server.pids(), "VmRSS")
    held, failed = [], 0
    t0 = time.time()
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            tls = ctx.wrap_socket(s, server_hostname="localhost")
            held.append(tls)
            if after_request:
                one_request(tls)
        except OSError:
            failed += 1
    took = time.time() - t0
    time.sleep(1.0)
    after = status_kb(server.pids(), "VmRSS")
    # Are they still open? A byte-less probe: the socket must not read EOF.
    alive = 0
    for s in held:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except (ssl.SSLWantReadError, BlockingIOError):
            alive += 1
        except OSError:
            pass
    for s in held:
        try:
            s.close()
        except OSError:
            pass
    return {
        "opened": len(held), "failed": failed, "alive_after_1s": alive,
        "open_seconds": round(took, 1),
        "rss_before_mb": round(base / 1024, 1), "rss_after_mb": round(after / 1024, 1),
        "kb_per_connection": round((after - base) / max(1, alive or len(held)), 2),
    }


def fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


SERVERS = ("nginx", "bare-pingora", "popgate-durable", "popgate-relaxed")
METRICS = ("rps", "p50_ms", "p99_ms", "p999_ms", "cpu_s_per_1k", "peak_rss_mb")


def median_run(runs):
    """Per metric, the median over the rounds of one server and mode."""
    out = {}
    for k in METRICS + ("ok_ratio",):
        vals = sorted(r[k] for r in runs if r.get(k) is not None)
        out[k] = vals[len(vals) // 2] if vals else None
    out["rounds"] = [{k: r[k] for k in METRICS + ("requests",)} for r in runs]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--idle", type=int, default=10000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.idle + 1000, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        print(f"warning: cannot raise the open-file limit to {want}", file=sys.stderr)

    popgate, bare, oha_bin = ensure_tools()
    tmp = tempfile.mkdtemp(prefix="popgate-bench-")
    servers = []
    results = {"runs": [], "idle": {}, "idle_after_request": {}}
    try:
        pki = write_setup(tmp, popgate)
        up_port = free_port()
        upstream = Server("upstream", [popgate, "registry-demo", "--listen", f"127.0.0.1:{up_port}"], up_port, tmp)
        servers.append(upstream)
        ng_port = free_port()
        ng_conf = nginx_config(tmp, ng_port, up_port)

        def start(name):
            if name == "nginx":
                return Server("nginx", ["nginx", "-p", tmp, "-c", ng_conf, "-g", "daemon off;"], ng_port, tmp)
            port = free_port()
            if name == "bare-pingora":
                return Server(name, [bare, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{up_port}",
                                     "--threads", str(THREADS), "--cert", "pki/server.pem", "--key", "pki/server.key",
                                     "--client-ca", "pki/ca.pem", "--crl", "pki/crl.pem", "--no-resumption"], port, tmp)
            cfg = popgate_config(tmp, port, up_port, name.split("-")[1], name)
            return Server(name, [popgate, "serve", "--config", cfg], port, tmp)

        # Ceiling: the upstream alone, plain HTTP.
        for keepalive in (True, False):
            m = measure(upstream, oha_bin, f"http://127.0.0.1:{up_port}{CITIZEN_PATH}", args.seconds,
                        args.connections, pki, keepalive, tls=False)
            results["runs"].append({"server": "upstream (direct, no TLS)", "keepalive": keepalive, **m})
            print(f"  upstream keepalive={keepalive}: {m['rps']:,.0f} req/s", flush=True)
        for keepalive in (True, False):
            per_server = {name: [] for name in SERVERS}
            for rnd in range(args.rounds):
                # Alternate the order too, so no server always runs first.
                order = SERVERS if rnd % 2 == 0 else tuple(reversed(SERVERS))
                for name in order:
                    s = start(name)
                    try:
                        m = measure(s, oha_bin, f"https://localhost:{s.port}{CITIZEN_PATH}", args.seconds,
                                    args.connections, pki, keepalive)
                    finally:
                        s.stop()
                    per_server[name].append(m)
                    print(f"  round {rnd + 1} {name} keepalive={keepalive}: {m['rps']:,.0f} req/s "
                          f"{m['cpu_s_per_1k'] or 0:.3f} CPU s/1k ok={m['ok_ratio']:.3f}", flush=True)
            for name in SERVERS:
                results["runs"].append({"server": name, "keepalive": keepalive, **median_run(per_server[name])})
        for key, after in (("idle", False), ("idle_after_request", True)):
            for name in ("nginx", "bare-pingora", "popgate-durable"):
                s = start(name)
                try:
                    results[key][name] = idle_connections(s.port, pki, args.idle, s, after_request=after)
                finally:
                    s.stop()
                print(f"  {key} {name}: {results[key][name]}", flush=True)
    finally:
        for s in servers:
            s.stop()

    def run(server, ka):
        return next(r for r in results["runs"] if r["server"] == server and r["keepalive"] == ka)

    print(f"\npopgate vs nginx vs bare pingora — {args.connections} connections, {args.seconds} s per run, "
          f"median of {args.rounds} alternating rounds, {THREADS} worker threads each, same upstream, mTLS\n")
    head = f"{'mode':<12} {'server':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'CPU s/1k':>9} {'peak RSS MB':>12} {'2xx':>6}"
    print(head)
    print("-" * len(head))
    for ka in (True, False):
        mode = "keep-alive" if ka else "new conn"
        for srv in ("upstream (direct, no TLS)",) + SERVERS:
            r = run(srv, ka)
            print(f"{mode:<12} {srv:<26} {r['rps']:>9,.0f} {fmt(r['p50_ms'],2):>8} {fmt(r['p99_ms'],2):>8} "
                  f"{fmt(r['p999_ms'],2):>9} {fmt(r['cpu_s_per_1k'],3):>9} {fmt(r['peak_rss_mb']):>12} {r['ok_ratio']:>6.3f}")
    print("\nratios (req/s: higher is better for popgate; latency, CPU, RSS: lower is better)")
    ratios = []
    for ka in (True, False):
        for peer in ("nginx", "bare-pingora"):
            base = run(peer, ka)
            for srv in ("popgate-durable", "popgate-relaxed"):
                pg = run(srv, ka)

                def ratio(k):
                    return (pg[k] / base[k]) if base.get(k) and pg.get(k) is not None else None
                row = {"mode": "keep-alive" if ka else "new conn", "server": srv, "vs": peer,
                       **{k: ratio(k) for k in METRICS}}
                ratios.append(row)
                print(f"  {row['mode']:<11} {srv:<16} / {peer:<13} req/s {fmt(row['rps'],2)}  p50 {fmt(row['p50_ms'],2)}  "
                      f"p99 {fmt(row['p99_ms'],2)}  p99.9 {fmt(row['p999_ms'],2)}  CPU/req {fmt(row['cpu_s_per_1k'],2)}  "
                      f"RSS {fmt(row['peak_rss_mb'],2)}")
    for key, label in (("idle", "right after the handshake"), ("idle_after_request", "after one request each")):
        print(f"\nidle mTLS connections held open ({args.idle}), {label}")
        for name, r in results[key].items():
            print(f"  {name:<16} opened {r['opened']:,} (alive {r['alive_after_1s']:,}, failed {r['failed']}), "
                  f"RSS {r['rss_before_mb']} → {r['rss_after_mb']} MB, {r['kb_per_connection']} KiB/connection")
    results["ratios"] = ratios
    results["setup"] = {
        "seconds": args.seconds, "rounds": args.rounds, "connections": args.connections, "threads": THREADS,
        "idle": args.idle,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "oha": subprocess.run([oha_bin, "--version"], capture_output=True, text=True).stdout.strip(),
        "popgate": subprocess.run([popgate, "--version"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/gateway.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\nwrote bench/results/gateway.json")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
