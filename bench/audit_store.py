#!/usr/bin/env python3
"""The cluster audit store (PostgreSQL): shipping, search, and what shipping costs the gateway.

1. Gateway cost: popgate (durable audit log) under keep-alive mTLS load with
   shipping to a real PostgreSQL on, and the same build and config with
   shipping off, in alternating rounds; medians and the on/off ratio
   (target: within 5 %).
2. Shipping throughput: `--instances` synthetic audit logs of `--records`
   records in all, written by the real writer (gateway/examples/audit_fill.rs:
   signed checkpoints, seals, record times spread over 30 days), each shipped
   with `popgate audit ship` into the store: records/s.
3. Search latency: `popgate audit search --store` for one citizen with a
   known number of accesses spread over every instance and day, among all
   the records (target: < 100 ms), wall time of the command as an officer
   runs it, median and worst of `--searches` runs.

PostgreSQL 15 (Debian) runs as the postgres user in a temporary directory on
127.0.0.1, with its default durability (fsync on, synchronous_commit on) and
shared_buffers 1 GB. Local logs are deleted once shipped, to fit the disk.

Run from the repository root, as root:
    python3 bench/audit_store.py [--records 10000000] [--instances 3] [--rounds 3] [--seconds 8]
Writes bench/results/audit_store.json.
"""
import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_vs_nginx as g  # noqa: E402

ROOT = g.ROOT
# Not the gateway runs' citizen (gateway_vs_nginx.CITIZEN_PATH), which those
# runs access hundreds of thousands of times.
TARGET = "036188004455"


class Postgres:
    def __init__(self, tmp):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            sys.exit("PostgreSQL not found: apt-get install postgresql")
        self.bin = os.path.dirname(bins[-1])
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        os.chmod(tmp, 0o755)
        shutil.chown(self.dir, "postgres")
        self.port = g.free_port()
        self.run("initdb", "-D", f"{self.dir}/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t", "60", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
                 f"-c max_wal_size=4GB -c max_connections=50", "start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bin, tool), *args],
                       check=True, stdout=subprocess.DEVNULL, cwd="/")

    def psql(self, sql):
        return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bin, "pg_ctl"), "-D",
                        f"{self.dir}/data", "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL, cwd="/")


def shipper_cpu(server):
    """CPU seconds of popgate's shipping thread so far (0 when shipping is off)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in server.pids():
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                if open(f"{task}/comm").read().strip().startswith("popgate-audit-s"):
                    fields = open(f"{task}/stat").read().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                pass
    return total


def gateway_cost(args, tmp, popgate, oha_bin, pki, pg):
    up_port = g.free_port()
    upstream = g.Server("upstream", [popgate, "registry-demo", "--listen", f"127.0.0.1:{up_port}"], up_port, tmp)
    runs = {"off": [], "on": []}
    try:
        for rnd in range(args.rounds):
            for mode in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                port = g.free_port()
                cfg = g.popgate_config(tmp, port, up_port, "durable", f"ship-{mode}")
                if mode == "on":
                    text = open(cfg).read().replace(
                        "  durability: durable\n",
                        f"  durability: durable\n  instance: bench-gw-{rnd}\n  store: {{url: '{pg.url}'}}\n", 1)
                    open(cfg, "w").write(text)
                s = g.Server(mode, [popgate, "serve", "--config", cfg], port, tmp)
                try:
                    ship0 = shipper_cpu(s)
                    m = g.measure(s, oha_bin, f"https://localhost:{port}{g.CITIZEN_PATH}", args.seconds,
                                  args.connections, pki, True)
                    # popgate's own shipping work, apart from PostgreSQL's.
                    m["shipper_cpu_ms_per_1k"] = (
                        (shipper_cpu(s) - ship0) * 1000 / (m["rps"] * args.seconds / 1000) if m["rps"] else None)
                finally:
                    s.stop()
                runs[mode].append(m)
                print(f"  round {rnd + 1} shipping {mode}: {m['rps']:,.0f} req/s, "
                      f"{m['cpu_s_per_1k'] or 0:.3f} CPU s/1k (shipping thread {m['shipper_cpu_ms_per_1k'] or 0:.1f} ms/1k), "
                      f"ok={m['ok_ratio']:.3f}", flush=True)
    finally:
        upstream.stop()
    shipped = int(pg.psql("SELECT count(*) FROM popgate_audit_records WHERE instance LIKE 'bench-gw-%'") or 0)
    med = {mode: g.median_run(r) for mode, r in runs.items()}
    med["on"]["shipper_cpu_ms_per_1k"] = statistics.median(
        r["shipper_cpu_ms_per_1k"] for r in runs["on"] if r.get("shipper_cpu_ms_per_1k") is not None)
    return {"off": med["off"], "on": med["on"], "rounds": runs,
            "rps_ratio_on_off": med["on"]["rps"] / med["off"]["rps"],
            "cpu_ratio_on_off": (med["on"]["cpu_s_per_1k"] / med["off"]["cpu_s_per_1k"])
            if med["off"].get("cpu_s_per_1k") else None,
            "records_shipped_during_runs": shipped}


def fill_and_ship(args, tmp, popgate, fill, pki, pg):
    per = args.records // args.instances
    out = []
    for i in range(args.instances):
        d = os.path.join(tmp, f"log-{i}")
        t0 = time.time()
        r = subprocess.run([fill, "--dir", d, "--instance", f"bench-{i}", "--records", str(per),
                            "--hmac-key", os.path.join(pki, "audit-hmac.key"),
                            "--seal-key", os.path.join(pki, "audit-seal.key"),
                            "--target", TARGET, "--target-hits", str(args.target_hits)],
                           check=True, capture_output=True, text=True)
        print("  " + r.stdout.strip(), flush=True)
        size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*.jsonl")))
        t1 = time.time()
        r = subprocess.run([popgate, "audit", "ship", d, "--instance", f"bench-{i}", "--store", pg.url],
                           check=True, capture_output=True, text=True)
        secs = time.time() - t1
        print("  " + r.stdout.strip(), flush=True)
        out.append({"instance": f"bench-{i}", "records": per, "log_bytes": size,
                    "fill_s": t1 - t0, "ship_s": secs, "records_per_s": per / secs})
        shutil.rmtree(d)
    return out


def search_latency(args, popgate, pki, pg):
    pg.psql("ANALYZE")
    total = int(pg.psql("SELECT count(*) FROM popgate_audit_records"))
    days = int(pg.psql("SELECT count(DISTINCT time::date) FROM popgate_audit_records WHERE instance LIKE 'bench-%' AND instance NOT LIKE 'bench-gw-%'"))
    cmd = [popgate, "audit", "search", "--citizen", TARGET, "--store", pg.url,
           "--hmac-key", os.path.join(pki, "audit-hmac.key"), "--format", "json"]
    times, hits = [], None
    for _ in range(args.searches):
        t = time.perf_counter()
        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
        times.append((time.perf_counter() - t) * 1000)
        hits = len(json.loads(r.stdout))
    plan = pg.psql(
        "EXPLAIN (ANALYZE, TIMING ON) SELECT instance, seq, line FROM popgate_audit_records "
        "WHERE citizen_ref = (SELECT citizen_ref FROM popgate_audit_records WHERE request_id = 'bench-0-"
        f"{(args.records // args.instances // args.target_hits) // 2}' LIMIT 1) ORDER BY time, instance, seq")
    exec_ms = next((float(line.split(":")[1].split()[0]) for line in plan.splitlines()
                    if line.startswith("Execution Time")), None)
    return {"records_in_store": total, "days": days, "hits": hits,
            "median_ms": statistics.median(times), "max_ms": max(times), "runs_ms": times,
            "server_execution_ms": exec_ms}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--target-hits", type=int, default=20, help="accesses to the searched citizen per instance")
    ap.add_argument("--searches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--skip-gateway", action="store_true")
    ap.add_argument("--skip-store", action="store_true", help="only the gateway on/off rounds")
    args = ap.parse_args()

    popgate, _bare, oha_bin = g.ensure_tools()
    g.sh(["cargo", "build", "--release", "--quiet", "-p", "gateway", "--example", "audit_fill"], cwd=ROOT)
    fill = os.path.join(ROOT, "target/release/examples/audit_fill")
    tmp = tempfile.mkdtemp(prefix="popgate-store-bench-")
    pg = None
    results = {}
    try:
        pki = g.write_setup(tmp, popgate)
        pg = Postgres(tmp)
        if not args.skip_gateway:
            print("gateway req/s, shipping off vs on:", flush=True)
            results["gateway"] = gateway_cost(args, tmp, popgate, oha_bin, pki, pg)
        if not args.skip_store:
            print(f"filling and shipping {args.records:,} records from {args.instances} instances:", flush=True)
            results["shipping"] = fill_and_ship(args, tmp, popgate, fill, pki, pg)
            print("searching:", flush=True)
            results["search"] = search_latency(args, popgate, pki, pg)
            results["store_size"] = pg.psql("SELECT pg_size_pretty(pg_database_size('postgres'))")
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\nresults")
    if "gateway" in results:
        gw = results["gateway"]
        print(f"  gateway keep-alive, {args.connections} connections, median of {args.rounds} alternating rounds:")
        for mode in ("off", "on"):
            r = gw[mode]
            print(f"    shipping {mode:<3}: {r['rps']:>9,.0f} req/s  p99 {g.fmt(r['p99_ms'], 2)} ms  "
                  f"CPU {g.fmt(r['cpu_s_per_1k'], 3)} s/1k")
        print(f"    on/off: req/s {gw['rps_ratio_on_off']:.3f}, CPU per request {g.fmt(gw['cpu_ratio_on_off'], 3)} "
              f"({gw['records_shipped_during_runs']:,} records shipped meanwhile); popgate's shipping thread "
              f"{gw['on']['shipper_cpu_ms_per_1k']:.1f} ms CPU per 1,000 requests")
    if "shipping" not in results:
        json.dump(results, open(os.path.join(ROOT, "bench/results/audit_store_gateway.json"), "w"), indent=2)
        print("wrote bench/results/audit_store_gateway.json")
        return
    ship = results["shipping"]
    total = sum(s["records"] for s in ship)
    secs = sum(s["ship_s"] for s in ship)
    per_instance = ", ".join(f"{x['records_per_s']:,.0f}" for x in ship)
    print(f"  shipping: {total:,} records in {secs:.0f} s = {total / secs:,.0f} records/s "
          f"(per instance: {per_instance})")
    s = results["search"]
    print(f"  search one citizen among {s['records_in_store']:,} records ({args.instances} instances, {s['days']} days): "
          f"{s['hits']} hits, median {s['median_ms']:.1f} ms, max {s['max_ms']:.1f} ms (command wall time); "
          f"query {s['server_execution_ms']} ms in PostgreSQL")
    print(f"  store size: {results['store_size']}")
    results["setup"] = {
        "records": args.records, "instances": args.instances, "rounds": args.rounds, "seconds": args.seconds,
        "connections": args.connections,
        "postgres": subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/audit_store.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("wrote bench/results/audit_store.json")


if __name__ == "__main__":
    main()
