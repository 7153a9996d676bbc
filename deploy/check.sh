#!/usr/bin/env bash
# Checks everything under deploy/. CI runs it; so can you, from anywhere:
#   deploy/check.sh
#
#  1. promtool check rules  deploy/prometheus/popgate-alerts.yml
#  2. promtool test rules   deploy/prometheus/popgate-alerts.test.yml
#  3. promtool check config deploy/prometheus/prometheus.yml
#  4. the Grafana dashboard is valid JSON (python3 -m json.tool)
#  5. every metric name in the dashboard's PromQL and in the alert exprs is
#     `up` or popgate_*, and is exported by gateway/src/metrics.rs (names
#     must be exported by the gateway source)
#  6. systemd-analyze verify on the units, when systemd-analyze exists
#
# Needs: promtool (Debian: apt-get install prometheus), python3; optional
# systemd-analyze (Debian: systemd). With POPGATE_REQUIRE_TOOLS=1 (as in
# .ci/run) a missing systemd-analyze is an error instead of a skip.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=deploy/prometheus/popgate-alerts.yml
TESTS=deploy/prometheus/popgate-alerts.test.yml
PROM=deploy/prometheus/prometheus.yml
DASH=deploy/grafana/popgate-dashboard.json
METRICS_SRC=gateway/src
UNITS=(deploy/systemd/popgate.service deploy/systemd/popscan-audit.service deploy/systemd/popscan-audit.timer)

step() { printf '\n== %s\n' "$*"; }
die() { printf 'check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

command -v promtool >/dev/null || die "promtool not found (Debian: apt-get install -y prometheus)"
command -v python3 >/dev/null || die "python3 not found"

step "promtool check rules $RULES"
promtool check rules "$RULES"

step "promtool test rules $TESTS"
promtool test rules "$TESTS"

step "promtool check config $PROM"
promtool check config "$PROM"

step "dashboard JSON: $DASH"
python3 -m json.tool "$DASH" >/dev/null
echo "  valid JSON"

step "metric names in dashboard PromQL and alert exprs"
python3 - "$DASH" "$RULES" "$METRICS_SRC" <<'PY'
import json, os, re, sys

dash_path, rules_path, metrics_src = sys.argv[1:4]
pending = set()

# Names popgate exports: every quoted popgate_* string in the gateway source.
exported = set()
for root, _, files in os.walk(metrics_src):
    for f in files:
        if f.endswith(".rs"):
            exported |= set(re.findall(r'"(popgate_[a-z0-9_]+)"', open(os.path.join(root, f), encoding="utf-8").read()))
if not exported:
    sys.exit(f"no popgate_* metric names found in {metrics_src}")

exprs = []  # (where, expr)

# Dashboard: every target expr and every query variable.
dash = json.load(open(dash_path, encoding="utf-8"))
def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))
panels = list(walk_panels(dash.get("panels", [])))
ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)):
    sys.exit("dashboard: duplicate panel ids")
for p in panels:
    for t in p.get("targets", []):
        if "expr" in t:
            exprs.append((f'dashboard panel "{p.get("title")}"', t["expr"]))
    if p.get("type") != "row" and p.get("targets") is not None and not p["targets"]:
        sys.exit(f'dashboard panel "{p.get("title")}" has no query')
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        exprs.append((f'dashboard variable "{v.get("name")}"', q))

# Alert rules: every expr (PyYAML if present, else a reader for this file's
# two forms: `expr: <one line>` and `expr: |` followed by an indented block).
rules_text = open(rules_path, encoding="utf-8").read()
try:
    import yaml
    doc = yaml.safe_load(rules_text)
    for g in doc["groups"]:
        for r in g["rules"]:
            exprs.append((f'alert {r.get("alert") or r.get("record")}', str(r["expr"])))
except ImportError:
    lines = rules_text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r'^(\s*)expr:\s*(.*)$', lines[i])
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">", "|-", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i])
                    i += 1
                exprs.append((f"{rules_path} expr", "\n".join(block)))
                continue
            exprs.append((f"{rules_path} expr", rest))
        i += 1

if not exprs:
    sys.exit("no PromQL expressions found")

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "atan2"}
HIST = ("_bucket", "_sum", "_count")

def metric_names(expr):
    lv = re.match(r'\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)', expr)
    if lv:  # Grafana variable query: label_values(metric[{...}], label)
        return {lv.group(1)}
    e = re.sub(r'\$\{[^}]*\}|\$\w+', ' ', expr)                 # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', e) # string literals
    e = re.sub(r'\{[^}]*\}', ' ', e)                             # label matchers
    e = re.sub(r'\[[^\]]*\]', ' ', e)                            # range selectors
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', e)
    names = set()
    for m in re.finditer(r'(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*', e):
        name = m.group(0)
        if e[m.end():].lstrip().startswith("("):   # function call
            continue
        if name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names

def base(name):
    for s in HIST:
        if name.endswith(s) and name[: -len(s)] in exported | pending:
            return name[: -len(s)]
    return name

errors, warnings, used = [], {}, set()
for where, expr in exprs:
    names = metric_names(expr)
    if not names:
        errors.append(f"{where}: no metric name found in {expr!r}")
    for n in names:
        b = base(n)
        used.add(b)
        if b == "up":
            continue
        if not b.startswith("popgate_"):
            errors.append(f"{where}: metric {n!r} is neither popgate_* nor up")
        elif b in exported:
            continue
        elif b in pending:
            warnings.setdefault(b, where)
        else:
            errors.append(f"{where}: metric {n!r} is not exported by {metrics_rs} (typo?)")

print(f"  {len(exprs)} expressions, {len(used)} distinct metrics: {', '.join(sorted(used))}")
for n in sorted(warnings):
    print(f"  WARNING: {n} is not in {metrics_rs} yet (listed as pending; first used by {warnings[n]})")
for n in sorted(pending & exported):
    print(f"  note: {n} has landed in {metrics_rs}; it can leave PENDING in deploy/check.sh")
if errors:
    for e in errors:
        print(f"  ERROR: {e}", file=sys.stderr)
    sys.exit(1)
print("  ok")
PY

step "systemd units"
if command -v systemd-analyze >/dev/null; then
  # verify refuses units whose binaries are missing. Where popgate/popscan
  # are not installed (CI), verify a copy with /bin/true in their place;
  # everything else (directives, values, calendar spec) is checked as is.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for u in "${UNITS[@]}"; do
    sed_args=()
    for bin in /usr/local/bin/popgate /usr/local/bin/popscan; do
      [ -x "$bin" ] || sed_args+=(-e "s#${bin}\\b#/bin/true#g")
    done
    if [ ${#sed_args[@]} -gt 0 ]; then sed "${sed_args[@]}" "$u" >"$tmp/$(basename "$u")"; else cp "$u" "$tmp/"; fi
  done
  local_units=()
  for u in "${UNITS[@]}"; do local_units+=("./$(basename "$u")"); done
  out=$(cd "$tmp" && systemd-analyze verify "${local_units[@]}" 2>&1) || { printf '%s\n' "$out"; die "systemd-analyze verify"; }
  # verify exits 0 on some problems it only prints (unknown directives, bad values).
  if [ -n "$out" ]; then printf '%s\n' "$out"; die "systemd-analyze verify printed warnings"; fi
  echo "  systemd-analyze verify: ok (${UNITS[*]##*/})"
else
  [ "${POPGATE_REQUIRE_TOOLS:-0}" = 1 ] && die "systemd-analyze not found (Debian: apt-get install systemd)"
  echo "  SKIPPED: systemd-analyze not found; units not verified"
fi

printf '\ncheck.sh: all deploy checks passed\n'
