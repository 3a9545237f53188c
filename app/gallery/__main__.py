"""``python -m app.gallery export FILE`` / ``import FILE``: move a gallery between stores.

An export is a tar file that holds, in this order:

* ``manifest.json``: the format, the active code space, and how many items and codes follow;
* ``code_ids.npy`` and ``codes.npy``: each item's code in the active space (int64 ids and a
  float32 matrix, one row per id), so the import needs no encoder;
* ``items.jsonl``: one JSON object per item (id, label, note, created, source, the hex
  content digest, which keeps the item's id in every store, and the PNG in base64).

The gallery comes from, or goes to, ``--from``/``--to`` (``milvus://HOST:PORT[/prefix]``
or the folder of an embedded gallery), by default the one the settings name (``GALLERY_URL``,
else ``GALLERY_DIR``). An import reads everything it is given within fixed bounds (the sizes
a file claims are checked against them, never trusted) and checks every record before it
writes anything; then it adds the items with their codes, in batches, to the target's
active space (the target gets the export's space when it has none yet, and must be in that
space otherwise). Items already in the target (same digest) stay as they are. The store
sets ``created`` anew on import.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import sqlite3
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from app.gallery.store import (
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    PNG_SIGNATURE,
    CodeSpace,
    GalleryItem,
    GalleryStore,
    NewItem,
    id_of,
)

FORMAT = "cellsign-gallery-export"
VERSION = 1
PAGE = 500  # items read, checked or added at a time
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ITEMS = 10_000_000
MAX_DIMENSION = 4096
MAX_PNG_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = MAX_PNG_BYTES * 4 // 3 + 16 * 1024  # base64 of the largest PNG + fields
MAX_NPY_HEADER_BYTES = 64 * 1024
MAX_ID_PROBE = 1024  # an id sits at most this far above the one its digest asks for


class ExportError(Exception):
    """What is wrong with a file or a location, in one line for the command line."""


# Stores ------------------------------------------------------------------------------------


def open_store(location: str, must_exist: bool) -> GalleryStore:
    """The store at ``location``: a milvus:// URL or an embedded gallery's folder."""
    if location.startswith("milvus://"):
        from app.gallery.milvus_store import MilvusGalleryStore

        try:
            return MilvusGalleryStore(location)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    from app.gallery.sqlite_store import DATABASE_FILE, SqliteGalleryStore

    directory = Path(location)
    if must_exist and not (directory / DATABASE_FILE).is_file():
        raise ExportError(f"{directory} holds no gallery ({DATABASE_FILE} is missing)")
    return SqliteGalleryStore(directory)


def default_location() -> str:
    from pydantic import ValidationError

    from app.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ExportError(f"settings: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return settings.gallery_url or str(settings.gallery_dir)


def stored_digests(store: GalleryStore, ids: Sequence[int]) -> dict[int, bytes]:
    reader = getattr(store, "digests", None)
    if reader is not None:
        return reader(ids)
    return dict(_sqlite_rows(store, "SELECT id, digest FROM items WHERE id IN ({})", [], ids))


def stored_codes(store: GalleryStore, space: CodeSpace, ids: Sequence[int]) -> dict[int, Any]:
    reader = getattr(store, "codes", None)
    if reader is not None:
        return reader(space, ids)
    from app.gallery.sqlite_store import space_key

    rows = _sqlite_rows(
        store, "SELECT id, code FROM codes WHERE space = ? AND id IN ({})", [space_key(space)], ids
    )
    return {item_id: np.frombuffer(code, "<f4") for item_id, code in rows}


def _sqlite_rows(
    store: GalleryStore, sql: str, head: list[Any], ids: Sequence[int]
) -> list[tuple[int, bytes]]:
    """The embedded store's rows, read from its database file (read-only), for what the
    store protocol does not hand out: digests and codes."""
    path = getattr(store, "path", None)
    if path is None:
        raise ExportError(f"{type(store).__name__} cannot hand out digests and codes")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        marks = ",".join("?" * len(ids))
        return db.execute(sql.format(marks), [*head, *ids]).fetchall()


# Export ------------------------------------------------------------------------------------


def all_items(store: GalleryStore) -> Iterator[list[GalleryItem]]:
    after: int | None = None
    while page := store.items(None, PAGE, after):
        yield page
        after = page[-1].id


def export(store: GalleryStore, path: Path) -> tuple[int, int]:
    """Write ``store``'s gallery to ``path`` (a new file, put in place when complete).
    Returns how many items and codes it holds."""
    space = store.active_space()
    code_ids: list[int] = []
    code_rows: list[np.ndarray] = []
    items = 0
    directory = path.resolve().parent
    with tempfile.TemporaryDirectory(dir=directory, prefix=".gallery-export-") as scratch:
        lines = Path(scratch) / "items.jsonl"
        with lines.open("w", encoding="utf-8") as out:
            for page in all_items(store):
                ids = [item.id for item in page]
                digests = stored_digests(store, ids)
                codes = stored_codes(store, space, ids) if space else {}
                for item in page:
                    png = store.image(item.id)
                    if png is None or item.id not in digests:
                        continue  # deleted while the export ran
                    record = {
                        "id": item.id,
                        "label": item.label,
                        "note": item.note,
                        "created": item.created,
                        "source": item.source,
                        "digest": digests[item.id].hex(),
                        "png": base64.b64encode(png).decode("ascii"),
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    items += 1
                    if item.id in codes:
                        code_ids.append(item.id)
                        code_rows.append(np.asarray(codes[item.id], np.float32))
        dimension = space.dimension if space else 0
        matrix = np.asarray(code_rows, np.float32).reshape(len(code_rows), dimension)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "space": None if space is None else space.__dict__,
            "items": items,
            "codes": len(code_ids),
        }
        partial = Path(scratch) / "export.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
            _add_bytes(tar, "code_ids.npy", _npy(np.asarray(code_ids, np.int64)))
            _add_bytes(tar, "codes.npy", _npy(matrix))
            tar.add(lines, arcname="items.jsonl", recursive=False)
        os.replace(partial, path)
    return items, len(code_ids)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# Import ------------------------------------------------------------------------------------


@dataclass
class Archive:
    space: CodeSpace | None
    items: int
    codes: dict[int, np.ndarray]
    tar: tarfile.TarFile


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ExportError(f"the export holds no {name}") from None
    if not member.isreg():
        raise ExportError(f"{name} in the export is not a regular file")
    stream = tar.extractfile(member)
    assert stream is not None  # a regular member always has one
    return stream


def _read_bounded(stream: IO[bytes], limit: int, name: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ExportError(f"{name} is larger than {limit} bytes")
    return data


def _load_npy(tar: tarfile.TarFile, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """An .npy member that must hold exactly ``dtype`` and ``shape``: the header is read
    within a bound, then only the bytes that shape needs."""
    stream = _member(tar, name)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            found_shape, fortran, found_dtype = np.lib.format.read_array_header_1_0(
                stream, max_header_size=MAX_NPY_HEADER_BYTES
            )
        elif version == (2, 0):
            found_shape, fortran, found_dtype = np.lib.format.read_array_header_2_0(
                stream, max_header_size=MAX_NPY_HEADER_BYTES
            )
        else:
            raise ValueError(f"npy version {version}")
    except ValueError as exc:
        raise ExportError(f"{name} is not a readable .npy array: {exc}") from None
    if found_dtype != np.dtype(dtype) or tuple(found_shape) != shape or fortran:
        raise ExportError(f"{name} holds {found_dtype} {found_shape}, expected {dtype} {shape}")
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    data = stream.read(size + 1)
    if len(data) != size:
        raise ExportError(f"{name} holds {len(data)} bytes of data, expected {size}")
    return np.frombuffer(data, dtype).reshape(shape)


def open_archive(path: Path) -> Archive:
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 - the Archive owns it; callers close it
    except (OSError, tarfile.TarError) as exc:
        raise ExportError(f"{path} is not a gallery export: {exc}") from None
    try:
        raw = _read_bounded(_member(tar, "manifest.json"), MAX_MANIFEST_BYTES, "manifest.json")
        try:
            manifest = json.loads(raw)
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ExportError(f"{path} is not a version {VERSION} gallery export")
            items, count = manifest["items"], manifest["codes"]
            space = _space(manifest["space"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ExportError("manifest.json is malformed") from None
        if not all(isinstance(n, int) and 0 <= n <= MAX_ITEMS for n in (items, count)):
            raise ExportError("manifest.json: items and codes are counts up to 10,000,000")
        if count > items or (space is None and count):
            raise ExportError("manifest.json: more codes than items, or codes without a space")
        dimension = space.dimension if space else 0
        ids = _load_npy(tar, "code_ids.npy", "<i8", (count,))
        matrix = _load_npy(tar, "codes.npy", "<f4", (count, dimension))
        if not np.isfinite(matrix).all():
            raise ExportError("codes.npy holds a value that is not a finite number")
        codes = dict(zip(ids.tolist(), matrix, strict=True))
        if len(codes) != count:
            raise ExportError("code_ids.npy names an id twice")
        return Archive(space, items, codes, tar)
    except BaseException:
        tar.close()
        raise


def _space(value: Any) -> CodeSpace | None:
    if value is None:
        return None
    space = CodeSpace(
        encoder_version=value["encoder_version"],
        dimension=value["dimension"],
        metric=value["metric"],
    )
    if not (
        isinstance(space.encoder_version, int)
        and 0 <= space.encoder_version < 2**31
        and isinstance(space.dimension, int)
        and 1 <= space.dimension <= MAX_DIMENSION
        and space.metric in ("cosine", "l2")
    ):
        raise ValueError("space")
    return space


def _records(archive: Archive) -> Iterator[list[tuple[NewItem, int]]]:
    """The items of ``items.jsonl`` in pages, each checked: (the item, its exported id)."""
    stream = _member(archive.tar, "items.jsonl")
    page: list[tuple[NewItem, int]] = []
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if number > archive.items:
            raise ExportError(f"items.jsonl holds more than the {archive.items} items announced")
        if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
            raise ExportError(f"items.jsonl line {number} is too long or cut short")
        try:
            page.append(_item(json.loads(line)))
        except KeyError as exc:
            raise ExportError(f"items.jsonl line {number}: no field {exc}") from None
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ExportError(f"items.jsonl line {number}: {exc or 'malformed'}") from None
        if len(page) == PAGE:
            yield page
            page = []
    if number != archive.items:
        raise ExportError(f"items.jsonl holds {number} items, the manifest {archive.items}")
    if page:
        yield page


def _item(record: Any) -> tuple[NewItem, int]:
    if not isinstance(record, dict):
        raise ValueError("not an object")
    label, note, source = record["label"], record["note"], record["source"]
    item_id, digest_hex, png_text = record["id"], record["digest"], record["png"]
    if not (isinstance(label, str) and 1 <= len(label) <= MAX_LABEL_CHARS and label.isprintable()):
        raise ValueError("label: 1 to 64 printable characters")
    if not (isinstance(note, str) and len(note) <= MAX_NOTE_CHARS and note.isprintable()):
        raise ValueError("note: at most 256 printable characters")
    if source not in ("offline", "added"):
        raise ValueError("source: offline or added")
    if not (isinstance(digest_hex, str) and len(digest_hex) == 64):
        raise ValueError("digest: 64 hex digits")
    digest = bytes.fromhex(digest_hex)
    if not (isinstance(item_id, int) and 0 <= item_id - id_of(digest) <= MAX_ID_PROBE):
        raise ValueError("id: not the id its digest asks for")
    if not (isinstance(png_text, str) and len(png_text) <= MAX_LINE_BYTES):
        raise ValueError("png: base64 text")
    png = base64.b64decode(png_text, validate=True)
    if len(png) > MAX_PNG_BYTES or not png.startswith(PNG_SIGNATURE):
        raise ValueError(f"png: a PNG of at most {MAX_PNG_BYTES} bytes")
    return NewItem(png=png, digest=digest, label=label, note=note, source=source), item_id


def import_into(store: GalleryStore, path: Path) -> tuple[int, int, int]:
    """Add the export at ``path`` to ``store``. Returns (added, already there, skipped for
    want of a code). Checks the whole file before the first write."""
    archive = open_archive(path)
    with closing(archive.tar):
        for _ in _records(archive):
            pass
    archive = open_archive(path)
    with closing(archive.tar):
        space = archive.space
        if space is None:
            if archive.items:
                raise ExportError("the export holds items but no code space")
            return 0, 0, 0
        active = store.active_space()
        if active is None:
            store.open_space(space)
            store.activate(space)
        elif active != space:
            raise ExportError(
                f"the target gallery searches encoder version {active.encoder_version} codes "
                f"({active.dimension}-d {active.metric}), the export holds version "
                f"{space.encoder_version} ({space.dimension}-d {space.metric})"
            )
        added = present = skipped = 0
        for page in _records(archive):
            with_codes = [(item, item_id) for item, item_id in page if item_id in archive.codes]
            skipped += len(page) - len(with_codes)
            if not with_codes:
                continue
            codes = np.stack([archive.codes[item_id] for _, item_id in with_codes])
            results = store.add([item for item, _ in with_codes], codes, space)
            for (_, exported_id), result in zip(with_codes, results, strict=True):
                if result.item.id != exported_id:
                    raise ExportError(
                        f"item {exported_id} got id {result.item.id} in the target: another "
                        "cell holds that id there"
                    )
                added += result.created
                present += not result.created
        return added, present, skipped


# Command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    where = (
        "milvus://HOST:PORT[/prefix] or an embedded gallery's folder; default: the settings' "
        "GALLERY_URL, else GALLERY_DIR"
    )
    top = argparse.ArgumentParser(
        prog="python -m app.gallery", description="Move a gallery between stores."
    )
    commands = top.add_subparsers(dest="command", required=True)
    out = commands.add_parser("export", help="write the gallery to FILE (a tar file)")
    out.add_argument("file", type=Path)
    out.add_argument("--from", dest="location", help=where)
    into = commands.add_parser("import", help="add the gallery in FILE to a store")
    into.add_argument("file", type=Path)
    into.add_argument("--to", dest="location", help=where)
    return top


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    store: GalleryStore | None = None
    try:
        location = args.location or default_location()
        if args.command == "export":
            if args.file.exists() and not args.file.is_file():
                raise ExportError(f"{args.file} exists and is not a file")
            store = open_store(location, must_exist=True)
            items, codes = export(store, args.file)
            print(f"exported {items} items ({codes} with codes) to {args.file}")
        else:
            if not args.file.is_file():
                raise ExportError(f"{args.file} is not a file")
            store = open_store(location, must_exist=False)
            added, present, skipped = import_into(store, args.file)
            print(
                f"imported {added} items ({present} were there already"
                + (f", {skipped} skipped: no code in the export" if skipped else "")
                + ")"
            )
        return 0
    except (ExportError, OSError) as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a store that fails (Milvus down): one line, not a traceback
        print(f"error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
