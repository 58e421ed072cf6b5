#!/usr/bin/env bash
# The Debian 12 packages the tests and the local stack run as programs (versions pinned by the
# release): PostgreSQL for the stack, Tesseract for the anonymizer's OCR fallback, dcmtk's
# storescu and echoscu as the third-party DICOM peer of ingest's tests, Chromium (headless) as
# the real browser the monitor's dashboard is rendered in. Installs what is
# missing when run as root; otherwise prints the command and fails.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v tesseract >/dev/null || missing+=(tesseract-ocr)
command -v storescu >/dev/null || missing+=(dcmtk)
command -v chromium >/dev/null || missing+=(chromium)
# The local Kubernetes (`fetalmlops cluster`) and its images (`make images`).
for program in containerd runc buildah debootstrap iptables socat conntrack gcc openssl; do
    command -v "$program" >/dev/null || missing+=("$program")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
compgen -G "/usr/lib/*/libc.a" >/dev/null || missing+=(libc6-dev)  # the static pause binary
if ((${#missing[@]} == 0)); then
    echo "system packages: all present (postgresql, tesseract-ocr, dcmtk, chromium, the cluster's)"
    exit 0
fi
if ((EUID != 0)); then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "system packages: installed ${missing[*]}"
