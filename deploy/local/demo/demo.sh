#!/usr/bin/env bash
# `make demo`: what exists today, end to end on this machine, with no server but the predictor.
# A phantom cohort (two high-end scanners and a portable one) → a model trained on the high-end
# images, scored on the portable ones it never saw → packaged in the KServe layout → served by
# the KServe predictor → one V1 prediction. The platform path (ingest, anonymizer, registry on
# Kafka/MinIO/PostgreSQL) is what `make test` runs; see tests/integration/.
set -euo pipefail
FETALMLOPS=${FETALMLOPS:-.venv/bin/fetalmlops}
DEMO=${DEMO:-$HOME/.cache/fetalmlops/demo}
PORT=${PORT:-8089}
rm -rf "$DEMO" && mkdir -p "$DEMO"

echo "== 1. a phantom cohort: 60 patients, three scanner profiles"
"$FETALMLOPS" phantom generate --patients 60 --out "$DEMO/phantom" --format png --seed 7

echo "== 2. train on the high-end scanners, hold out the portable one"
FETALMLOPS_TRAINER_WORKDIR="$DEMO/work" "$FETALMLOPS" train --dataset "$DEMO/phantom" \
    --out "$DEMO/model" --input-size 64 --epochs 25 --patience 10 --ood-cohort portable
echo "   version in the KServe layout:" && (cd "$DEMO/model" && find . -type f | sort | sed 's/^/     /')

echo "== 3. serve it with the KServe predictor on 127.0.0.1:$PORT"
"$FETALMLOPS" serve --model-dir "$DEMO/model" --http-port "$PORT" > "$DEMO/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "127.0.0.1:$PORT/readyz" >/dev/null && break
    sleep 1
done

IMAGE=$(find "$DEMO/phantom/png/fetal_brain" -name '*.png' | sort | head -1)
echo "== 4. POST /v1/models/fetal-planes:predict with $(basename "$IMAGE") (truly fetal_brain)"
printf '{"instances": [{"b64": "%s"}]}' "$(base64 -w0 "$IMAGE")" > "$DEMO/request.json"
curl -s "127.0.0.1:$PORT/v1/models/fetal-planes:predict" -d @"$DEMO/request.json" \
    | python3 -m json.tool
echo "== the model card: $DEMO/model/model-card.md"
