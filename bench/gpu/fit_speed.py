"""Fit the decode speed model on published and measured llama.cpp figures; report held-out error.

Model (maas.compiler.placement.common): seconds per token = weight bytes read / (efficiency of the
memory class x theoretical bandwidth) + KV bytes read at half the test's context / the same
+ a fixed time per layer and token (kernel launches, synchronisation). Unknowns: one efficiency
per class (HBM, GDDR) and one fixed time per llama.cpp build, since the per-token overhead fell
between the 2023/2024 tables and today's build (CUDA graphs); the plan uses today's. Fitted by
least squares on relative error.

Held-out evaluation by GPU, three ways: the GPUs sorted by (memory class, name), GPU i in fold
i mod 3; each fold (a third of the GPUs, HBM and GDDR alike) is predicted by a fit on the other
two, so every GPU is held out once. The constants for the compiler come from the fit on all
points. Data and sources: bench/data/decode-published.csv.
Usage: python bench/gpu/fit_speed.py  (prints markdown; constants to copy into placement/common)
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# KV elements per token per layer (K + V) and layers of each model family, f16 cache
LAYERS = {"llama2-7b": 32, "llama2-13b": 40, "llama2-70b": 80, "llama3-8b": 32, "llama3-1b": 16}
KV_PER_TOKEN = {"llama2-7b": 2 * 4096 * 32, "llama2-13b": 2 * 5120 * 40,
                "llama2-70b": 2 * 1024 * 80, "llama3-8b": 2 * 1024 * 32,
                "llama3-1b": 2 * 512 * 16}  # fmt: skip
# llama.cpp build behind each source: S3 (H100) and S4 (H200) are both today's
BUILD = {"S1": "2024-05", "S2": "2023-12", "S3": "today", "S4": "today"}
BUILDS = ("2023-12", "2024-05", "today")
FOLDS = 3


def rows() -> list[dict[str, str]]:
    lines = [
        line
        for line in (ROOT / "bench/data/decode-published.csv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return list(csv.DictReader(lines))


def features(r: dict[str, str]) -> tuple[float, ...]:
    """(bytes/bandwidth if GDDR, bytes/bandwidth if HBM, layers if of each build): seconds per
    token is their dot product with (1/e_gddr, 1/e_hbm, t0 of each build)."""
    weights = float(r["params_b"]) * 1e9 * float(r["bpw"]) / 8
    family = "-".join(r["model"].split("-")[:2])
    kv = KV_PER_TOKEN[family] * 2 * int(r["ctx"]) / 2
    ideal = (weights + kv) / (float(r["bandwidth_gbs"]) * 1e9)
    # kernel launches and synchronisation grow with the layers run per token
    build = tuple(LAYERS[family] if BUILD[r["source"]] == b else 0.0 for b in BUILDS)
    return ((ideal, 0.0) if r["class"] == "gddr" else (0.0, ideal)) + build


def fit(train: list[dict[str, str]]) -> np.ndarray:
    x = np.array([features(r) for r in train])
    if not all(x[:, i].any() for i in range(x.shape[1])):
        raise SystemExit("a memory class or build has no point left to fit on")
    t = np.array([1 / float(r["tok_s"]) for r in train])
    solution, *_ = np.linalg.lstsq(x / t[:, None], np.ones(len(train)), rcond=None)
    return np.asarray(solution)


def predict(coef: np.ndarray, r: dict[str, str]) -> float:
    return float(1 / (np.array(features(r)) @ coef))


def error(coef: np.ndarray, r: dict[str, str]) -> float:
    return (predict(coef, r) - float(r["tok_s"])) / float(r["tok_s"]) * 100


def describe(coef: np.ndarray) -> str:
    fixed = ", ".join(f"{b} {t * 1e6:.1f} us" for b, t in zip(BUILDS, coef[2:], strict=True))
    return (
        f"GDDR efficiency {1 / coef[0]:.3f}, HBM efficiency {1 / coef[1]:.3f}, "
        f"fixed per layer and token: {fixed}"
    )


def summary(errors: dict[str, list[float]]) -> None:
    print("| class | points | median abs error | median error |")
    print("| --- | --- | --- | --- |")
    for cls, values in sorted(errors.items()):
        print(f"| {cls} | {len(values)} | {statistics.median(abs(v) for v in values):.1f}% | "
              f"{statistics.median(values):+.1f}% |")  # fmt: skip


def main() -> None:
    data = rows()
    order = sorted({(r["class"], r["gpu"]) for r in data})
    fold_of = {gpu: i % FOLDS for i, (_, gpu) in enumerate(order)}
    everything = fit(data)
    print(f"All {len(data)} points, {len(order)} GPUs (constants for the compiler): "
          f"{describe(everything)}\n")  # fmt: skip
    print("| fold | held-out GPU | class | model | source | measured tok/s | predicted | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    held: dict[str, list[float]] = {}
    fits = []
    for fold in range(FOLDS):
        coef = fit([r for r in data if fold_of[r["gpu"]] != fold])
        fits.append(f"fold {fold}: {describe(coef)}")
        for r in sorted(data, key=lambda r: (r["class"], r["gpu"], r["model"])):
            if fold_of[r["gpu"]] != fold:
                continue
            e = error(coef, r)
            held.setdefault(r["class"], []).append(e)
            held.setdefault("all", []).append(e)
            print(f"| {fold} | {r['gpu']} | {r['class']} | {r['model']} | {r['source']} | "
                  f"{r['tok_s']} | {predict(coef, r):.1f} | {e:+.1f}% |")  # fmt: skip
    print("\nFits without the held-out fold:\n")
    print("\n".join(f"- {line}" for line in fits))
    print("\nHeld-out error (each GPU predicted by the fit without its fold):\n")
    summary(held)
    print("\nIn-sample error of the fit on all points:\n")
    inside: dict[str, list[float]] = {}
    for r in data:
        e = error(everything, r)
        inside.setdefault(r["class"], []).append(e)
        inside.setdefault("all", []).append(e)
    summary(inside)


if __name__ == "__main__":
    main()
