"""Build the similar-cell FAISS index over the newest exported autoencoder's codes.

The gallery is the training split (same split and seed as training), so held-out test
cells stay unseen: they are the queries of the retrieval report. Validation cells are
queried too and reported apart: design choices are compared on them, never on test.
Codes are L2-normalised and searched by inner product (cosine similarity). Small galleries
get an exact flat index; above ``approximate_above`` cells an HNSW graph, whose recall@10
against exact search is measured and recorded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from contract.layout import AUTOENCODER as ENCODER_NAME
from contract.layout import GALLERY_FILE, GALLERY_IMAGES_FILE, INDEX_FILE, REPORT_DIR, versions
from contract.layout import INDEX as INDEX_NAME
from contract.metadata import AutoencoderMetadata, EncoderReference, IndexFields, read_metadata
from contract.pixels import scale, to_rgb
from contract.signatures import BOTTLENECK, CODES, ENCODE, ENCODE_CODES
from training import reports
from training.errors import DataError
from training.export import write_version
from training.malaria.data import LABEL_NAMES, UNLABELLED, CellSplit, load_malaria
from training.malaria.train import QUICK
from training.options import JobOptions
from training.progress import JobProgress

PRECISION_KS = (1, 5, 10)
RECALL_K = 10
DEFAULT_APPROXIMATE_ABOVE = 50_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 64  # FAISS's default of 16 trades too much recall for speed at k=10
QUICK_FRACTION = QUICK.data_fraction  # the cells a quick training run saw


def newest_encoder(out_dir: Path) -> tuple[Path, AutoencoderMetadata]:
    root = Path(out_dir) / ENCODER_NAME
    numbers = versions(root)
    if not numbers:
        raise DataError(
            f"no {ENCODER_NAME} version in {root}; train it first (python -m training malaria)"
        )
    version_dir = root / str(numbers[-1])
    metadata = read_metadata(version_dir)
    if not isinstance(metadata, AutoencoderMetadata):
        raise DataError(f"{version_dir}: not an autoencoder's metadata")
    return version_dir, metadata


ENCODE_BATCH = 512


def encode_images(
    encode: Any,
    images: np.ndarray,
    batch_size: int = ENCODE_BATCH,
    progress: JobProgress | None = None,
) -> np.ndarray:
    """uint8 cells -> L2-normalised float32 codes through a SavedModel signature (``encode``
    or ``bottleneck``); each batch is reported to ``progress`` when given."""
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(scale(images[start : start + batch_size]))
        chunks.append(encode(images=batch)[CODES].numpy())
        if progress is not None:
            progress.advance()
    codes = np.concatenate(chunks).astype(np.float32)
    faiss.normalize_L2(codes)
    return codes


def make_index(codes: np.ndarray, approximate_above: int) -> faiss.Index:
    dimension = codes.shape[1]
    index: faiss.Index
    if len(codes) > approximate_above:
        index = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH  # saved with the index, so the server uses it
    else:
        index = faiss.IndexFlatIP(dimension)
    index.add(codes)
    return index


def exact_neighbours(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Each query's ``k`` gallery rows of largest inner product, best first: one matrix
    product per block of queries (faiss's flat search took 4x as long on the 4,608-d
    bottleneck codes)."""
    k = min(k, len(gallery))
    blocks = []
    for start in range(0, len(queries), 1024):
        scores = queries[start : start + 1024] @ gallery.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        blocks.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(blocks)


def recall_against_exact(index: faiss.Index, gallery: np.ndarray, queries: np.ndarray) -> float:
    """Fraction of the exact top-``RECALL_K`` neighbours that ``index`` also returns."""
    truth = exact_neighbours(gallery, queries, RECALL_K)
    _, found = index.search(queries, truth.shape[1])
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found, strict=True))
    return hits / truth.size


def precision_at_k(
    neighbours: np.ndarray,
    gallery_labels: np.ndarray,
    query_labels: np.ndarray,
    label_names: tuple[str, ...] = LABEL_NAMES,
) -> dict[str, Any]:
    """Share of each query's top-k neighbours with the query's label, overall and by label.

    Only labelled queries are scored (an unlabelled gallery cell never counts as a match);
    without any labelled query there is nothing to score and the result is empty."""
    labelled = query_labels != UNLABELLED
    neighbours, query_labels = neighbours[labelled], query_labels[labelled]
    if len(query_labels) == 0:
        return {}
    same = gallery_labels[neighbours] == query_labels[:, None]
    result: dict[str, Any] = {}
    for k in PRECISION_KS:
        if k > neighbours.shape[1]:
            continue
        per_query = same[:, :k].mean(axis=1)
        result[f"precision_at_{k}"] = {
            "all": float(per_query.mean()),
            **{
                name: float(per_query[query_labels == label].mean())
                for label, name in enumerate(label_names)
                if np.any(query_labels == label)
            },
        }
    return result


def write_gallery(
    folder: Path, gallery: CellSplit, label_names: tuple[str, ...] = LABEL_NAMES
) -> None:
    """``gallery.npz`` (ids, labels, offsets) + ``gallery_images.bin`` (PNG bytes, concatenated).

    Labels are the label names (``""`` for an unlabelled cell)."""
    pngs = [_as_png(raw) for raw in gallery.stored_bytes]
    offsets = np.zeros(len(pngs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(png) for png in pngs])
    (folder / GALLERY_IMAGES_FILE).write_bytes(b"".join(pngs))
    np.savez(
        folder / GALLERY_FILE,
        ids=np.arange(len(pngs), dtype=np.int64),
        labels=np.array(
            [label_names[label] if label != UNLABELLED else "" for label in gallery.labels],
            dtype=str,
        ),
        offsets=offsets,
    )


GALLERY_SIDE = 256  # a larger gallery image is shrunk to this longest side


def _as_png(raw: bytes) -> bytes:
    """Small PNGs (all of the NIH cells) are kept as stored; anything else is re-encoded as
    RGB PNG, no larger than ``GALLERY_SIDE`` on its longest side."""
    with Image.open(io.BytesIO(raw)) as image:
        if raw.startswith(b"\x89PNG") and max(image.size) <= GALLERY_SIDE:
            return raw
        picture = to_rgb(ImageOps.exif_transpose(image))
        picture.thumbnail((GALLERY_SIDE, GALLERY_SIDE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_neighbour_grid(
    path: Path,
    queries: CellSplit,
    gallery: CellSplit,
    neighbours: np.ndarray,
    label_names: tuple[str, ...] = LABEL_NAMES,
    count: int = 6,
) -> None:
    groups = [UNLABELLED, *range(len(label_names))]
    per_group = max(1, count // max(1, len(label_names)))
    picks = [i for label in groups for i in np.flatnonzero(queries.labels == label)[:per_group]][
        : max(count, 2)
    ]
    rows = [[queries.images[i], *gallery.images[neighbours[i, :8]]] for i in picks]
    titles = [
        f"query: {label_names[queries.labels[i]] if queries.labels[i] >= 0 else 'unlabelled'}"
        for i in picks
    ]
    reports.plot_image_grid(rows, path, row_titles=titles)


def build_index(
    options: JobOptions,
    *,
    approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
    progress: JobProgress | None = None,
) -> Path:
    """Encode the training-split gallery with the newest encoder and export the index.

    The index holds the ``encode`` codes (the contrastive retrieval head, averaged over the
    8 symmetries). When the encoder also exports ``bottleneck``, the plain flattened
    bottleneck codes are searched the same way as the lab's baseline and reported beside.
    The input size is the encoder's; ``options`` epochs and image size do not apply.
    """
    data, out_dir, seed = options.data, options.out, options.seed
    encoder_dir, encoder_metadata = newest_encoder(out_dir)
    encoder_seed = encoder_metadata.data.get("seed")
    if encoder_seed != seed:
        raise ValueError(
            f"the encoder split its cells with seed {encoder_seed}, not {seed}:"
            " use the same seed so its held-out cells stay out of the gallery"
        )
    progress = progress or JobProgress(INDEX_NAME)
    progress.note("loading cells")
    fraction = QUICK_FRACTION if options.quick else 1.0
    cells = load_malaria(
        data,
        encoder_metadata.input.height,
        seed=seed,
        fraction=fraction,
    )
    gallery, queries = cells.splits["train"], cells.splits["test"]
    names = cells.label_names
    validation = cells.splits["validation"]
    signatures = tf.saved_model.load(str(encoder_dir)).signatures
    # encode_codes: the same codes without the OOD score (absent from older versions)
    encoders = {ENCODE: signatures.get(ENCODE_CODES, signatures[ENCODE])}
    if BOTTLENECK in signatures:
        encoders[BOTTLENECK] = signatures[BOTTLENECK]
    batches = sum(-(-len(split.labels) // ENCODE_BATCH) for split in (gallery, validation, queries))
    progress.start_epoch(1, 1, batches * len(encoders), f"{INDEX_NAME}: encoding cells")
    codes = {
        name: [
            encode_images(encode, split.images, progress=progress)
            for split in (gallery, validation, queries)
        ]
        for name, encode in encoders.items()
    }
    gallery_codes, validation_codes, query_codes = codes[ENCODE]
    index = make_index(gallery_codes, approximate_above)
    depth = min(max(PRECISION_KS), len(gallery_codes))
    neighbours = index.search(query_codes, depth)[1]
    validation_neighbours = index.search(validation_codes, depth)[1]
    progress.end_epoch(f"{len(gallery.labels)} gallery cells indexed")
    metrics = {
        "queries": len(queries.labels),
        "recall_at_10_vs_exact": recall_against_exact(index, gallery_codes, query_codes),
        **precision_at_k(neighbours, gallery.labels, queries.labels, names),
        "validation": {
            "queries": len(validation.labels),
            **precision_at_k(validation_neighbours, gallery.labels, validation.labels, names),
        },
    }
    if BOTTLENECK in codes:
        plain_gallery, plain_validation, plain_queries = codes[BOTTLENECK]
        metrics["bottleneck_baseline"] = {
            "codes": "flattened decoder bottleneck, cosine, not in the index",
            "shape": bottleneck.shape if (bottleneck := encoder_metadata.bottleneck) else None,
            **precision_at_k(
                exact_neighbours(plain_gallery, plain_queries, depth),
                gallery.labels,
                queries.labels,
                names,
            ),
            "validation": precision_at_k(
                exact_neighbours(plain_gallery, plain_validation, depth),
                gallery.labels,
                validation.labels,
                names,
            ),
        }

    def write_payload(folder: Path) -> None:
        faiss.write_index(index, str(folder / INDEX_FILE))
        write_gallery(folder, gallery, names)
        reports.write_json(folder / REPORT_DIR / "metrics.json", metrics)
        write_neighbour_grid(
            folder / REPORT_DIR / "neighbours.png", queries, gallery, neighbours, names
        )

    fields = IndexFields(
        encoder=EncoderReference(name=ENCODER_NAME, version=encoder_metadata.version),
        dimension=int(gallery_codes.shape[1]),
        index_type=type(index).__name__,
        metric="cosine",
        normalize_codes=True,
        codes="the encoder's encode signature: the contrastive retrieval head's"
        f" {int(gallery_codes.shape[1])}-d code averaged over the 8 symmetries of each cell",
        size=int(index.ntotal),
        data={**cells.summary(), "seed": seed, "gallery_split": "train", "query_split": "test"},
        hyperparameters={
            "approximate_above": approximate_above,
            "hnsw_neighbours": HNSW_NEIGHBOURS,
            "hnsw_ef_search": HNSW_EF_SEARCH,
        },
        metrics=metrics,
    )
    return write_version(out_dir, INDEX_NAME, write_payload, fields)
