#!/usr/bin/env bash
# System packages the test suite needs: Debian's prometheus (with promtool) for the telemetry
# tests and kubectl (with kustomize) for the manifest tests. CI runs as root on a fresh machine and
# nothing installed by hand survives, so this installs what is missing and fails loudly when it
# cannot. kubectl usually ships with the machine; Debian's kubernetes-client conflicts with that
# one, so it is installed only where kubectl is missing.
set -euo pipefail
missing=()
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages ${missing[*]} and not root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v kubectl >/dev/null
