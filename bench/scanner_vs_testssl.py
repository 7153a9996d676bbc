#!/usr/bin/env python3
"""popscan vs testssl.sh and sslscan on the same local TLS servers.

Starts a set of `openssl s_server` instances on 127.0.0.1 with different
configurations, runs each tool on each endpoint (one tool at a time, so the
timings are fair), and compares what they found: protocols offered, cipher
suites offered per protocol (by IANA code point) and certificate facts.
The server's configuration is the ground truth where it is known (the
expected suites come from `openssl ciphers -V` on the configured string).

Run from the repository root (as root if testssl.sh/sslscan must be
installed):
    python3 bench/scanner_vs_testssl.py
Writes bench/results/scanner.json.
"""
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOS = ["SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
OPENSSL_FLAG = {"TLSv1.0": "-tls1", "TLSv1.1": "-tls1_1", "TLSv1.2": "-tls1_2", "TLSv1.3": "-tls1_3"}

# name, key type, s_server flags, protocols configured, cipher string (≤1.2), TLS 1.3 suites
CONFIGS = [
    ("openssl-defaults", "rsa", [], ["TLSv1.2", "TLSv1.3"], "DEFAULT", "DEFAULT13"),
    ("tls12-serverpref", "rsa",
     ["-tls1_2", "-serverpref", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:AES128-SHA"],
     ["TLSv1.2"], "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:AES128-SHA", None),
    ("legacy-tls10-12", "rsa",
     ["-min_protocol", "TLSv1", "-max_protocol", "TLSv1.2", "-cipher",
      "ECDHE-RSA-AES128-SHA:AES128-SHA:NULL-SHA:@SECLEVEL=0"],
     ["TLSv1.0", "TLSv1.1", "TLSv1.2"], "ECDHE-RSA-AES128-SHA:AES128-SHA:NULL-SHA:@SECLEVEL=0", None),
    ("tls13-only-ec", "ec",
     ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256", "-groups", "X25519:P-384"],
     ["TLSv1.3"], None, "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"),
    ("dhe-1024", "rsa",
     ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0", "-dhparam", "{dh}"],
     ["TLSv1.2"], "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0", None),
]
DEFAULT13 = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_tools():
    missing = [p for p, b in (("testssl.sh", "testssl"), ("sslscan", "sslscan"), ("openssl", "openssl"))
               if not shutil.which(b)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "scanner", "--bin", "popscan"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "popscan")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_certs(d):
    def ossl(*a):
        r = run(["openssl", *a], cwd=d)
        if r.returncode:
            raise RuntimeError(r.stderr)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "365",
         "-subj", "/CN=Bench CA", "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for kind, newkey in (("rsa", ["-newkey", "rsa:2048"]), ("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        ossl("req", *newkey, "-nodes", "-subj", "/CN=localhost", "-keyout", f"{kind}.key", "-out", f"{kind}.csr")
        ossl("x509", "-req", "-days", "90", "-in", f"{kind}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-extfile", "ext", "-out", f"{kind}.pem")
    ossl("dhparam", "-out", "dh.pem", "1024")


def expected_suites(proto, cipher, suites13, key):
    """Code points OpenSSL serves for a protocol under the configured strings
    with a certificate of type `key` (an RSA server cannot negotiate ECDSA
    suites and vice versa)."""
    if proto == "TLSv1.3":
        names = (DEFAULT13 if suites13 == "DEFAULT13" else suites13 or "").split(":")
        out = run(["openssl", "ciphers", "-V", "-s", "-tls1_3", "-ciphersuites", ":".join(n for n in names if n), "NULL"]).stdout
    else:
        out = run(["openssl", "ciphers", "-V", "-s", OPENSSL_FLAG[proto], cipher]).stdout
    ids = set()
    auth_ok = {"rsa": ("RSA", "None", "any"), "ec": ("ECDSA", "None", "any")}[key]
    for line in out.splitlines():
        m = re.match(r"\s*0x(..),0x(..) - (\S+)\s+(\S+)\s+Kx=(\S+)\s+Au=(\S+)", line)
        if not m or m[6] not in auth_ok:
            continue
        if (proto == "TLSv1.3") == (m[4] == "TLSv1.3" or m[3].startswith("TLS_AES") or m[3].startswith("TLS_CHACHA")):
            ids.add(int(m[1] + m[2], 16))
    return ids


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def cert_facts_from_der(der_b64):
    import base64
    der = base64.b64decode(der_b64)
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text", "-enddate", "-subject"],
                       input=der, capture_output=True)
    text = r.stdout.decode(errors="replace")
    bits = re.search(r"Public-Key: \((\d+) bit\)", text)
    sig = re.search(r"Signature Algorithm: (\S+)", text)
    end = re.search(r"notAfter=(.+)", text)
    cn = re.search(r"subject=.*CN ?= ?([^,\n/]+)", text)
    return {"key_bits": int(bits[1]) if bits else None, "signature": norm_sig(sig[1] if sig else ""),
            "not_after": norm_date(end[1].strip()) if end else None, "cn": cn[1].strip() if cn else None}


def norm_sig(s):
    s = s.lower().replace(" ", "").replace("-", "")
    for k, v in (("sha256withrsa", "sha256-rsa"), ("ecdsawithsha256", "sha256-ecdsa"),
                 ("sha384withrsa", "sha384-rsa"), ("ecdsawithsha384", "sha384-ecdsa"),
                 ("sha1withrsa", "sha1-rsa"), ("ecdsawithsha1", "sha1-ecdsa")):
        if s.startswith(k):
            return v
    return s


def norm_date(s):
    for fmt in ("%b %d %H:%M:%S %Y %Z", "%Y-%m-%d %H:%M"):
        try:
            return time.strftime("%Y-%m-%d", time.strptime(s.replace("  ", " "), fmt))
        except ValueError:
            pass
    return s


def popscan_facts(popscan, port):
    r = run([popscan, "probe", f"127.0.0.1:{port}", "--sni", "localhost", "--format", "json"])
    if r.returncode:
        return {"error": r.stderr.strip()}
    ev = json.loads(r.stdout)
    protos = {p["protocol"]: p["offered"] for p in ev["protocols"]}
    suites = {p["protocol"]: sorted(s["id"] for s in p["suites"]) for p in ev["protocols"] if p["offered"]}
    cert = cert_facts_from_der(ev["chain"][0]) if ev.get("chain") else {}
    return {"protocols": protos, "suites": suites, "cert": cert}


def testssl_facts(port, tmp):
    out = os.path.join(tmp, f"testssl-{port}.json")
    if os.path.exists(out):
        os.remove(out)
    run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-E", "-S", "--jsonfile", out,
         f"127.0.0.1:{port}"])
    findings = json.load(open(out)) if os.path.exists(out) else []
    ids = {"SSLv3": "SSLv3", "TLS1": "TLSv1.0", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}
    protos, suites, cert = {}, {}, {}
    for f in findings:
        i, v = f.get("id", ""), f.get("finding", "")
        if i in ids:
            protos[ids[i]] = v.startswith("offered")
        m = re.match(r"cipher-tls1(?:_(\d))?_x([0-9a-f]+)$", i)
        if m:
            p = {None: "TLSv1.0", "1": "TLSv1.1", "2": "TLSv1.2", "3": "TLSv1.3"}[m[1]]
            suites.setdefault(p, []).append(int(m[2], 16))
        m = re.match(r"cipher-ssl3_x([0-9a-f]+)$", i)
        if m:
            suites.setdefault("SSLv3", []).append(int(m[1], 16))
        if i == "cert_keySize":
            b = re.search(r"(\d+) bits", v)
            cert["key_bits"] = int(b[1]) if b else None
        elif i == "cert_signatureAlgorithm":
            cert["signature"] = norm_sig(v.replace("with", "with"))
        elif i == "cert_notAfter":
            cert["not_after"] = norm_date(v)
        elif i == "cert_commonName":
            cert["cn"] = v
    for p in suites:
        suites[p] = sorted(set(suites[p]))
    return {"protocols": protos, "suites": suites, "cert": cert}


def sslscan_facts(port, tmp):
    out = os.path.join(tmp, f"sslscan-{port}.xml")
    run(["sslscan", "--no-colour", f"--xml={out}", f"127.0.0.1:{port}"])
    try:
        root = ET.parse(out).getroot()
    except (ET.ParseError, OSError) as e:
        return {"error": str(e)}
    names = {("ssl", "3"): "SSLv3", ("tls", "1.0"): "TLSv1.0", ("tls", "1.1"): "TLSv1.1",
             ("tls", "1.2"): "TLSv1.2", ("tls", "1.3"): "TLSv1.3"}
    protos, suites, cert = {}, {}, {}
    for p in root.iter("protocol"):
        k = names.get((p.get("type"), p.get("version")))
        if k:
            protos[k] = p.get("enabled") == "1"
    for c in root.iter("cipher"):
        suites.setdefault(c.get("sslversion").replace("TLSv1.0", "TLSv1.0"), []).append(int(c.get("id"), 16))
    for c in root.iter("certificate"):
        pk = c.find("pk")
        sig = c.find("signature-algorithm")
        na = c.find("not-valid-after")
        subj = c.find("subject")
        cert = {"key_bits": int(pk.get("bits")) if pk is not None and pk.get("bits") else None,
                "signature": norm_sig(sig.text) if sig is not None else None,
                "not_after": norm_date(na.text) if na is not None else None,
                "cn": subj.text.replace("CN=", "").strip() if subj is not None and subj.text else None}
        break
    for p in suites:
        suites[p] = sorted(set(suites[p]))
    return {"protocols": protos, "suites": suites, "cert": cert}


def timed(f, *a):
    t = time.monotonic()
    r = f(*a)
    return r, time.monotonic() - t


def hexes(ids):
    return ",".join(f"{i:04X}" for i in sorted(ids)) or "—"


def main():
    popscan = ensure_tools()
    tmp = tempfile.mkdtemp(prefix="popscan-bench-")
    make_certs(tmp)
    servers, rows, disagreements = [], [], []
    try:
        for name, kind, flags, protos, cipher, suites13 in CONFIGS:
            port = free_port()
            flags = [f.replace("{dh}", os.path.join(tmp, "dh.pem")) for f in flags]
            p = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", f"{kind}.pem",
                                  "-key", f"{kind}.key", "-www", "-quiet", *flags], cwd=tmp,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers.append(p)
            wait_port(port)
            truth_protos = {q: q in protos for q in PROTOS}
            truth_suites = {q: sorted(expected_suites(q, cipher or "DEFAULT", suites13, kind)) for q in protos}
            popscan_facts(popscan, port)  # warm-up, not timed
            ps, t_ps = timed(popscan_facts, popscan, port)
            ts, t_ts = timed(testssl_facts, port, tmp)
            sc, t_sc = timed(sslscan_facts, port, tmp)
            rows.append({"endpoint": name, "port": port, "seconds": {"popscan": t_ps, "testssl.sh": t_ts, "sslscan": t_sc},
                         "findings": {"popscan": ps, "testssl.sh": ts, "sslscan": sc},
                         "configured": {"protocols": truth_protos, "suites": truth_suites}})
            print(f"  {name}: popscan {t_ps:.2f} s, testssl.sh {t_ts:.1f} s, sslscan {t_sc:.2f} s", flush=True)
            tools = {"popscan": ps, "testssl.sh": ts, "sslscan": sc}
            for q in PROTOS:
                vals = {k: v.get("protocols", {}).get(q) for k, v in tools.items()}
                if len({x for x in vals.values() if x is not None}) > 1 or any(x is not None and x != truth_protos[q] for x in vals.values()):
                    disagreements.append({"endpoint": name, "fact": f"{q} offered", **{k: str(v) for k, v in vals.items()},
                                          "configured": str(truth_protos[q])})
            for q in PROTOS:
                vals = {k: v.get("suites", {}).get(q, []) for k, v in tools.items()}
                truth = truth_suites.get(q, [])
                if any(sorted(v) != truth for v in vals.values()):
                    disagreements.append({"endpoint": name, "fact": f"{q} suites", **{k: hexes(v) for k, v in vals.items()},
                                          "configured": hexes(truth)})
            for fact in ("key_bits", "signature", "not_after", "cn"):
                vals = {k: v.get("cert", {}).get(fact) for k, v in tools.items()}
                if len({str(x) for x in vals.values()}) > 1:
                    disagreements.append({"endpoint": name, "fact": f"certificate {fact}", **{k: str(v) for k, v in vals.items()},
                                          "configured": "—"})
    finally:
        for p in servers:
            p.kill()
            p.wait()

    tot = {k: sum(r["seconds"][k] for r in rows) for k in ("popscan", "testssl.sh", "sslscan")}
    print(f"\nSeconds per endpoint (full protocol + cipher + certificate scan), {len(rows)} local openssl s_server endpoints\n")
    print(f"{'endpoint':<20} {'popscan':>8} {'testssl.sh':>11} {'sslscan':>8} {'testssl/popscan':>16} {'sslscan/popscan':>16}")
    for r in rows + [{"endpoint": "TOTAL", "seconds": tot}]:
        s = r["seconds"]
        print(f"{r['endpoint']:<20} {s['popscan']:>8.2f} {s['testssl.sh']:>11.1f} {s['sslscan']:>8.2f} "
              f"{s['testssl.sh'] / s['popscan']:>15.0f}x {s['sslscan'] / s['popscan']:>15.1f}x")
    print(f"\nDisagreements (any tool differing from another or from the configuration): {len(disagreements)}\n")
    for d in disagreements:
        print(f"  {d['endpoint']:<18} {d['fact']:<22} popscan={d['popscan']}  testssl.sh={d['testssl.sh']}  "
              f"sslscan={d['sslscan']}  configured={d['configured']}")
    versions = {
        "popscan": run([popscan, "--version"]).stdout.strip(),
        "testssl.sh": " ".join(next((re.sub(r"\x1b\[[0-9;]*m", "", l).split()[:2] for l in run(["testssl", "--version"]).stdout.splitlines() if "testssl.sh" in l), ["?"])),
        "sslscan": re.sub(r"\x1b\[[0-9;]*m", "", run(["sslscan", "--version"]).stdout).split()[0] if run(["sslscan", "--version"]).stdout.split() else "?",
        "openssl": run(["openssl", "version"]).stdout.strip(),
    }
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(),
               "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"\nversions: {versions}\nmachine: {machine}")
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/scanner.json"), "w") as f:
        json.dump({"endpoints": rows, "total_seconds": tot, "disagreements": disagreements,
                   "versions": versions, "machine": machine}, f, indent=2)
    print("wrote bench/results/scanner.json")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
