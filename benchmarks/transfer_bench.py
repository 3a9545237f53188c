"""``python -m benchmarks.transfer_bench --work DIR [--seeds 0 1] [--full-seeds 0]``: what
``--init-from`` gives on a tenth of the images, against training from scratch.

Two cases, both built from the SIGNS photos (``{label}_IMG_{id}.jpg``) as class folders:

- (a) renamed: the six gestures as ``zero``..``five``, started from a model of the same
  photos under their digit names (the same images, a new head);
- (b) digits 3-5, started from a model that only ever saw digits 0-2 (new gestures).

A fixed stratified 27 images per class (seed ``TEST_SEED``, the same for every run) are the
test images: no run trains, stops early or chooses anything on them, and each version is
scored on them through its exported signature (``training.evaluate``), as the server would
run it. The rest of the photos are the pool. "All" trains on the whole pool, a "tenth" on
15 images per class drawn from it (per seed); the run holds out its own validation and test
split from what it is given, as a user's run does. The pool images outside a tenth score
the tenth's runs as "validation": the figure to choose a recipe by, never the test one.

The all-images runs and the two source models are trained for ``--full-seeds`` only (each
takes minutes on two cores); the tenths for every ``--seeds`` (each a different draw and
training seed), started from the first full seed's sources. Every run goes through
``python -m training signs`` as a user would run it. Results are appended to
``WORK/results.jsonl`` (a run already there is not repeated) and summarised as markdown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SIGNS_TRAIN = REPO_ROOT.parent / "shared" / "data" / "signs" / "train"
NAMES = ("zero", "one", "two", "three", "four", "five")
TEST_SEED = 1234
TEST_PER_CLASS = 27  # 15% of SIGNS' 180 per class, as the default run holds out
TENTH = 10
SOURCE_B = (0, 1, 2)
TARGET_B = (3, 4, 5)


def signs_files(folder: Path) -> dict[int, list[Path]]:
    """The SIGNS photos by label, sorted by name."""
    files: dict[int, list[Path]] = defaultdict(list)
    for path in sorted(folder.glob("*_IMG_*.jpg")):
        files[int(path.name.split("_", 1)[0])].append(path)
    if sorted(files) != list(range(6)):
        raise SystemExit(f"{folder}: expected SIGNS photos of the labels 0-5")
    return dict(files)


def draw(files: dict[int, list[Path]], per_class: int, seed: int) -> dict[int, list[Path]]:
    """``per_class`` files of every label, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        label: sorted(paths[i] for i in rng.permutation(len(paths))[:per_class])
        for label, paths in files.items()
    }


def minus(files: dict[int, list[Path]], taken: dict[int, list[Path]]) -> dict[int, list[Path]]:
    return {
        label: [p for p in paths if p not in set(taken[label])] for label, paths in files.items()
    }


def write_folders(
    root: Path, files: dict[int, list[Path]], labels: Sequence[int], renamed: bool
) -> Path:
    """Class folders of ``labels`` (the photos copied byte for byte), named by digit or
    by word."""
    if root.is_dir():
        return root
    scratch = root.with_name(root.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    for label in labels:
        folder = scratch / (NAMES[label] if renamed else str(label))
        folder.mkdir(parents=True)
        for path in files[label]:
            shutil.copyfile(path, folder / path.name)
    scratch.rename(root)
    return root


def build_data(work: Path, signs: Path, seeds: Sequence[int]) -> dict[str, Path]:
    """Every folder the runs train and score on, under ``work/data``."""
    data = work / "data"
    files = signs_files(signs)
    test = draw(files, TEST_PER_CLASS, TEST_SEED)
    pool = minus(files, test)
    folders = {
        "a/test": write_folders(data / "a-test", test, range(6), renamed=True),
        "a/test-digits": write_folders(data / "a-test-digits", test, range(6), renamed=False),
        "a/all": write_folders(data / "a-all-digits", pool, range(6), renamed=False),
        "b/test": write_folders(data / "b-test", test, TARGET_B, renamed=False),
        "b/source": write_folders(data / "b-source", pool, SOURCE_B, renamed=False),
        "b/all": write_folders(data / "b-all", pool, TARGET_B, renamed=False),
    }
    for seed in seeds:
        tenth = draw(pool, round(min(map(len, pool.values())) / TENTH), seed)
        rest = minus(pool, tenth)
        folders[f"a/tenth/{seed}"] = write_folders(data / f"a-tenth-{seed}", tenth, range(6), True)
        folders[f"a/rest/{seed}"] = write_folders(data / f"a-rest-{seed}", rest, range(6), True)
        folders[f"b/tenth/{seed}"] = write_folders(data / f"b-tenth-{seed}", tenth, TARGET_B, False)
        folders[f"b/rest/{seed}"] = write_folders(data / f"b-rest-{seed}", rest, TARGET_B, False)
    return folders


def train(data: Path, out: Path, seed: int, init_from: Path | None = None, *extra: str) -> Path:
    """One ``python -m training signs`` run into its own models folder; its version."""
    version = out / "signs_classifier" / "1"
    if (version / "metadata.json").is_file():
        return version
    command = [sys.executable, "-m", "training", "signs", "--data", str(data)]
    command += ["--out", str(out), "--seed", str(seed)]
    if init_from is not None:
        command += ["--init-from", str(init_from), *extra]
    print("$", " ".join(command[1:]), flush=True)
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        subprocess.run(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, check=True)
    return version


def score(version: Path, data: Path) -> dict[str, Any]:
    from training.evaluate import evaluate

    result = evaluate(version, data)
    return {
        "accuracy": result["accuracy"],
        "correct": round(result["accuracy"] * result["images"]),
        "images": result["images"],
    }


def record(
    work: Path, case: str, seed: int, version: Path, test: Path, rest: Path | None
) -> dict[str, Any]:
    """Score one version and append it to ``results.jsonl`` (once per case and seed)."""
    results = work / "results.jsonl"
    done = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    for row in done:
        if (row["case"], row["seed"]) == (case, seed):
            return row
    metadata = json.loads((version / "metadata.json").read_text())
    metrics = metadata["metrics"]
    row = {
        "case": case,
        "seed": seed,
        "test": score(version, test),
        "validation": score(version, rest) if rest is not None else None,
        "run_validation_accuracy": metrics.get("validation_accuracy"),
        "epochs_run": metrics.get("epochs_run"),
        "training_seconds": metrics.get("training_seconds"),
        "train_images": metadata["data"]["split_sizes"]["train"],
        "init_from": metadata.get("init_from"),
        "transfer": metadata["hyperparameters"].get("transfer"),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }
    with results.open("a") as sink:
        sink.write(json.dumps(row) + "\n")
    print(json.dumps({k: row[k] for k in ("case", "seed", "test", "validation")}), flush=True)
    return row


def run(
    work: Path, signs: Path, seeds: Sequence[int], full_seeds: Sequence[int], init_only: bool
) -> None:
    """Every case's runs; with ``init_only`` the sources and the runs that start from them
    only (what a change to ``--init-from`` moves)."""
    folders = build_data(work, signs, seeds)
    runs = work / "runs"
    sources: dict[str, Path] = {}
    for seed in full_seeds:
        a_all = train(folders["a/all"], runs / f"a-all-{seed}", seed)
        record(work, "a: all, from scratch", seed, a_all, folders["a/test-digits"], None)
        b_source = train(folders["b/source"], runs / f"b-source-{seed}", seed)
        if not init_only:
            b_all = train(folders["b/all"], runs / f"b-all-{seed}", seed)
            record(work, "b: all, from scratch", seed, b_all, folders["b/test"], None)
        sources.setdefault("a", a_all)
        sources.setdefault("b", b_source)
    for seed in seeds:
        for case in ("a", "b"):
            tenth, rest = (folders[f"{case}/{k}/{seed}"] for k in ("tenth", "rest"))
            test = folders[f"{case}/test"]
            if not init_only:
                scratch = train(tenth, runs / f"{case}-tenth-scratch-{seed}", seed)
                record(work, f"{case}: tenth, from scratch", seed, scratch, test, rest)
            started = train(tenth, runs / f"{case}-tenth-init-{seed}", seed, sources[case])
            record(work, f"{case}: tenth, --init-from", seed, started, test, rest)
            frozen = runs / f"{case}-tenth-frozen-{seed}"
            frozen = train(tenth, frozen, seed, sources[case], "--frozen-stages")
            record(work, f"{case}: tenth, --init-from --frozen-stages", seed, frozen, test, rest)


def summary(work: Path) -> str:
    """The results as a markdown table: test (and validation) accuracy per case and seed."""
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_case[row["case"]].append(row)
    lines = [
        "| case | seeds | test accuracy per seed (correct/images) | mean | validation (pool"
        " outside the tenth) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in sorted(by_case):
        found = sorted(by_case[case], key=lambda row: row["seed"])
        tests = ", ".join(
            f"{r['test']['accuracy']:.3f} ({r['test']['correct']}/{r['test']['images']})"
            for r in found
        )
        mean = np.mean([r["test"]["accuracy"] for r in found])
        validation = ", ".join(
            f"{r['validation']['accuracy']:.3f}" for r in found if r["validation"]
        )
        seeds = ", ".join(str(r["seed"]) for r in found)
        lines.append(f"| {case} | {seeds} | {tests} | {mean:.3f} | {validation or '-'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer_bench", description=__doc__
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for data, runs, results")
    parser.add_argument("--signs", type=Path, default=SIGNS_TRAIN, help="SIGNS jpg folder")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="tenth draws")
    parser.add_argument("--full-seeds", type=int, nargs="+", default=[0], help="all-image runs")
    parser.add_argument("--summary", action="store_true", help="only print the table")
    parser.add_argument(
        "--init-only", action="store_true", help="only the sources and the --init-from runs"
    )
    arguments = parser.parse_args(argv)
    if not arguments.summary:
        run(
            arguments.work,
            arguments.signs,
            arguments.seeds,
            arguments.full_seeds,
            arguments.init_only,
        )
    print(summary(arguments.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
