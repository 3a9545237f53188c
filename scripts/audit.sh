#!/usr/bin/env bash
# Audit the packages installed in .venv for known vulnerabilities with pip-audit.
#
# pip-audit asks an advisory service (PyPI's JSON API by default; `-s osv` for OSV) about
# every installed package. Where that service cannot be reached or knows none of the
# packages (offline machines, registry mirrors), the audit fails soft: one "audit skipped"
# line and exit 0, or exit 2 with AUDIT_STRICT=1 (for CI that must not pass unaudited).
# Exit 1 means vulnerabilities were found. Extra arguments go to pip-audit.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "audit skipped: $1"
  [ "${AUDIT_STRICT:-0}" = "1" ] && exit 2
  exit 0
}

[ -x .venv/bin/pip-audit ] || skip "pip-audit is not installed (run: bash scripts/setup.sh dev)"

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
status=0
.venv/bin/pip-audit --skip-editable --progress-spinner off --timeout 20 --format json \
  --output "$workdir/report.json" "$@" 2>"$workdir/stderr" || status=$?

if [ ! -s "$workdir/report.json" ]; then
  reason="$(grep -Eo '(ConnectionError|NameResolutionError|Max retries|timed out|ServiceError)[^(]*' \
    "$workdir/stderr" | head -n 1 || true)"
  skip "pip-audit exited with $status before reporting: ${reason:-see pip-audit output}"
fi

summary_status=0
.venv/bin/python - "$workdir/report.json" >"$workdir/summary" <<'PY' || summary_status=$?
"""Summarise pip-audit's JSON report. Exit 1: vulnerable packages; 3: nothing was checked."""
import json
import sys

with open(sys.argv[1]) as report:
    dependencies = json.load(report)["dependencies"]
skipped = [d for d in dependencies if "skip_reason" in d]
vulnerable = [d for d in dependencies if d.get("vulns")]
checked = len(dependencies) - len(skipped)
for dependency in vulnerable:
    for vulnerability in dependency["vulns"]:
        fixes = ", ".join(vulnerability.get("fix_versions", [])) or "none yet"
        print(f"{dependency['name']} {dependency['version']}: {vulnerability['id']} (fix: {fixes})")
if vulnerable:
    print(f"audit failed: {len(vulnerable)} of {checked} checked packages are vulnerable")
    sys.exit(1)
if checked == 0:
    example = f"{skipped[0]['name']}: {skipped[0]['skip_reason']}" if skipped else "none found"
    print(f"the advisory service could check none of {len(dependencies)} packages ({example})")
    sys.exit(3)
unchecked = f"; {len(skipped)} could not be checked" if skipped else ""
print(f"audit passed: {checked} packages, no known vulnerabilities{unchecked}")
PY
[ "$summary_status" -eq 3 ] && skip "$(cat "$workdir/summary")"
cat "$workdir/summary"
exit "$summary_status"
