"""How to call the version: the storageUri's layout, the InferenceService that serves it, and a
KServe V1 request with its answer."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fetalmlops.trainer.card.facts import CardFacts


def how_to_use(facts: CardFacts) -> str:
    uri = facts.storage_uri
    name = facts.model_name
    return f"""## How to use

KServe's TorchServe runtime serves this version from its storageUri, which holds:

```text
{uri}
├── model-store/{name}.mar      # TorchScript, handler, preprocessing, class names
└── config/config.properties    # TorchServe settings for KServe
```

```yaml
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    model:
      modelFormat:
        name: pytorch
      protocolVersion: v1
      storageUri: {uri}
```

A V1 request carries one base64-encoded PNG or JPEG per instance:

```bash
printf '{{"instances": [{{"data": "%s"}}]}}' "$(base64 -w0 image.png)" > request.json
curl -s -H "Host: $SERVICE_HOSTNAME" -H "Content-Type: application/json" \\
  -d @request.json "http://$INGRESS_HOST/v1/models/{name}:predict"
```

and gets, per instance, the plane and the softmax over the classes in output order:

```json
{_example_response(facts.classes)}
```

The archived TorchScript divides its logits by T = {facts.temperature:.3f} (fit on the
validation split), so the probabilities it answers are the calibrated ones."""


def _example_response(classes: Sequence[str]) -> str:
    shares = [0.9] + [round(0.1 / (len(classes) - 1), 3)] * (len(classes) - 1)
    answer = {"label": classes[0], "probabilities": dict(zip(classes, shares, strict=True))}
    return json.dumps({"predictions": [answer]})
