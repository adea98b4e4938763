#!/usr/bin/env bash
# Copies the CRDs under crds/ into the Helm chart, which can only read files inside its own
# directory. crds/ is the one to edit; tests/unit/test_chart.py fails while the copies differ.
#
#   hack/sync-crds.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart_crds="$root/charts/gitquorum/crds"
mkdir -p "$chart_crds"
for crd in "$root"/crds/*.yaml; do
  cp "$crd" "$chart_crds/"
  echo "synced ${crd#"$root/"} -> ${chart_crds#"$root/"}/$(basename "$crd")"
done
