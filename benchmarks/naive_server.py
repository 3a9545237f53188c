"""The baseline: the SIGNS classifier served the way tutorials do it.

The SavedModel is wrapped in a Keras model (``TFSMLayer``) and every request calls
``model.predict`` on its own single image: no micro-batching, no compiled signature call,
the per-call overhead of ``predict`` paid on each request. The benchmark starts it with
``uvicorn benchmarks.naive_server:app`` and ``MODEL_DIR`` pointing at the models folder.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import keras
import numpy as np
from fastapi import FastAPI, UploadFile
from PIL import Image

from contract.layout import CLASSIFIER, METADATA_FILE, versions


def newest_version(model_dir: Path) -> Path:
    numbers = versions(model_dir / CLASSIFIER)
    if not numbers:
        raise FileNotFoundError(f"no {CLASSIFIER} version under {model_dir}")
    return model_dir / CLASSIFIER / str(numbers[-1])


def load_model(version_dir: Path) -> tuple[keras.Model, tuple[int, int]]:
    metadata = json.loads((version_dir / METADATA_FILE).read_text())
    height, width = metadata["input"]["height"], metadata["input"]["width"]
    layer = keras.layers.TFSMLayer(str(version_dir), call_endpoint="serving_default")
    inputs = keras.Input(shape=(height, width, 3))
    return keras.Model(inputs, layer(inputs)), (height, width)


model, (HEIGHT, WIDTH) = load_model(newest_version(Path(os.environ.get("MODEL_DIR", "models"))))
app = FastAPI(title="naive classifier baseline")


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/classify")
async def classify(file: UploadFile) -> dict[str, object]:
    image = Image.open(io.BytesIO(await file.read())).convert("RGB").resize((WIDTH, HEIGHT))
    batch = np.asarray(image, dtype=np.float32)[np.newaxis] / 255.0
    probabilities = model.predict(batch, verbose=0)["probabilities"][0]
    return {"class_index": int(np.argmax(probabilities)), "probabilities": probabilities.tolist()}
