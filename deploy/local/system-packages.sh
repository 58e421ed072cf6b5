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
if ((${#missing[@]} == 0)); then
    echo "system packages: all present (postgresql, tesseract-ocr, dcmtk, chromium)"
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
