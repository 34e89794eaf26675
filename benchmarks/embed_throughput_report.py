"""The results of ``benchmarks/embed_throughput.py``: rates and ratios per round, the targets'
verdicts (:func:`summarise`) and the markdown report (:func:`markdown`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

SETS = ("photos", "small_pngs")
TARGET = 2.5  # ONNX Runtime bare vs torch eager bare
PREDICT_TARGET = 0.9  # /predict vs the Embedder's files -> vectors


def _summary(rates: list[float]) -> dict[str, Any]:
    return {
        "rounds": [round(r, 2) for r in rates],
        "best": round(max(rates), 2),
        "median": round(float(np.median(rates)), 2),
    }


def summarise(
    args: argparse.Namespace,
    bare: dict[str, list[float]],
    e2e: dict[str, list[float]],
    cpu: dict[str, list[float]],
    loads: list[tuple[float, float]],
    pass_size: int,
    size: int,
) -> dict[str, Any]:
    """The measured rates, ratios per round (paths of one round share the machine's noise)."""
    ref = f"onnx_b{pass_size}"
    ratios: dict[str, Any] = {}
    for key, rates in e2e.items():
        per_round = [r / b for r, b in zip(rates, bare[ref], strict=True)]
        ratios[f"{key}_vs_{ref}"] = {
            "rounds": [round(x, 3) for x in per_round],
            "median": round(float(np.median(per_round)), 3),
            "best_over_best": round(max(rates) / max(bare[ref]), 3),
        }
    for s in SETS:  # /predict against the Embedder's files -> vectors (same round)
        best_bare = [
            max(p, q)
            for p, q in zip(e2e[f"onnx_pipelined_{s}"], e2e[f"onnx_sequential_{s}"], strict=True)
        ]
        for served in ("predict", "predict_one"):
            for key, base in (
                ("onnx_pipelined", e2e[f"onnx_pipelined_{s}"]),
                ("onnx_sequential", e2e[f"onnx_sequential_{s}"]),
                ("embedder_best", best_bare),
            ):
                per_round = [p / q for p, q in zip(e2e[f"{served}_{s}"], base, strict=True)]
                ratios[f"{served}_{s}_vs_{key}_{s}"] = {
                    "rounds": [round(x, 3) for x in per_round],
                    "median": round(float(np.median(per_round)), 3),
                    "best_over_best": round(max(e2e[f"{served}_{s}"]) / max(base), 3),
                }
    for s in SETS:
        gains = [
            p / q
            for p, q in zip(e2e[f"onnx_pipelined_{s}"], e2e[f"onnx_sequential_{s}"], strict=True)
        ]
        ratios[f"pipelined_vs_sequential_{s}"] = {
            "rounds": [round(x, 3) for x in gains],
            "median": round(float(np.median(gains)), 3),
        }
    speedup = [o / t for o, t in zip(bare[ref], bare[f"torch_b{pass_size}"], strict=True)]
    ratios[f"onnx_vs_torch_bare_b{pass_size}"] = {
        "rounds": [round(x, 2) for x in speedup],
        "median": round(float(np.median(speedup)), 2),
        "best_over_best": round(max(bare[ref]) / max(bare[f"torch_b{pass_size}"]), 2),
    }
    per_core = [
        o / t
        for o, t in zip(
            bare[f"onnx_1thread_b{pass_size}"], bare[f"torch_1thread_b{pass_size}"], strict=True
        )
    ]
    ratios[f"onnx_vs_torch_bare_1thread_b{pass_size}"] = {
        "rounds": [round(x, 2) for x in per_core],
        "median": round(float(np.median(per_core)), 2),
    }
    stage_ms = {k: round(float(np.median(v)), 2) for k, v in cpu.items()}
    forward_ms = stage_ms[f"onnx_forward_1thread_b{pass_size}"]
    ceiling = {s: round(forward_ms / (forward_ms + stage_ms[f"prepare_{s}"]), 3) for s in SETS}
    return {
        "benchmark": "embed_throughput",
        "backbone": "efficientnet-lite0",
        "image_size": size,
        "images_per_set_and_round": args.n,
        "rounds": args.rounds,
        "predict_tasks_per_request": args.predict_batch,
        "backbone_pass_images": pass_size,
        "bare_images_per_s": {k: _summary(v) for k, v in bare.items()},
        "end_to_end_images_per_s": {k: _summary(v) for k, v in e2e.items()},
        "ratios": ratios,
        "cpu_ms_per_image_one_thread_median": stage_ms,
        "cpu_bound_ceiling_vs_bare": ceiling,
        "load_1m_per_round": loads,
        "target_onnx_vs_torch": TARGET,
        "target_predict_vs_bare": PREDICT_TARGET,
        "meets_onnx_target": min(
            ratios[f"onnx_vs_torch_bare_b{pass_size}"]["median"],
            ratios[f"onnx_vs_torch_bare_1thread_b{pass_size}"]["median"],
        )
        >= TARGET,
        "predict_target_judged_on": (
            "/predict vs the bare path from the same image files: the faster of the Embedder's "
            "pipelined and sequential files -> vectors in the same round (ONNX Runtime, local "
            "reads), median round; at 16 tasks per request and with the round's images in one "
            "request"
        ),
        "meets_predict_target": {
            f"{served}_{s}": ratios[f"{served}_{s}_vs_embedder_best_{s}"]["median"]
            >= PREDICT_TARGET
            for served in ("predict", "predict_one")
            for s in SETS
        },
        "meets_predict_target_vs_forward_pass": {
            f"{served}_{s}": ratios[f"{served}_{s}_vs_{ref}"]["median"] >= PREDICT_TARGET
            for served in ("predict", "predict_one")
            for s in SETS
        },
    }


def _cell(rates: dict[str, Any]) -> str:
    return f"{rates['best']} ({rates['median']})"


def markdown(result: dict[str, Any], batches: tuple[int, ...], results: Path) -> str:
    """The result as a short markdown report (``batches``: the bare pass sizes measured;
    ``results``: the folder whose ``predict_memory_pipelined.json`` is quoted)."""
    pass_size = result["backbone_pass_images"]
    ref = f"onnx_b{pass_size}"
    b, e, r = result["bare_images_per_s"], result["end_to_end_images_per_s"], result["ratios"]
    loads = ", ".join(f"{a}->{z}" for a, z in result["load_1m_per_round"])
    lines = [
        f"# Embedding throughput at {result['image_size']} px: bare backbone, files -> vectors, "
        "/predict",
        "",
        f"{result['backbone']}, {result['images_per_set_and_round']} fresh images per set and "
        f"round, {result['rounds']} rounds; images/s as best round (median round). "
        f"torch {result['torch']} ({result['torch_threads']} threads), onnxruntime "
        f"{result['onnxruntime']} ({result['onnx_threads']} one-thread runs per pass). "
        f"{result['cpu']}, "
        f"{result['cpu_count']} CPUs, measured {result['measured']}.",
        "",
        (
            "**Run alone** (nothing else running; the load is this benchmark's own). "
            if result["load_1m_at_start"] < 1.0
            else "**Shared machine**: other jobs ran beside this one. "
        )
        + f"1-minute load average at start "
        f"{result['load_1m_at_start']}, at end {result['load_1m_at_end']}, per round "
        f"(before->after): {loads}. Ratios are taken within each round (the paths of one round "
        "share its noise) and the median round's ratio is reported.",
        "",
        "## Bare forward pass (preprocessed float32 inputs, photos)",
        "",
        "| images per pass | torch eager | ONNX Runtime |",
        "| ---: | ---: | ---: |",
    ]
    for batch in batches:
        t = b.get(f"torch_b{batch}")
        lines.append(
            f"| {batch}{' (the backend pass at 224 px)' if batch == pass_size else ''} | "
            f"{_cell(t) if t else '-'} | {_cell(b[f'onnx_b{batch}'])} |"
        )
    intra = b.get(f"onnx_intraop_b{pass_size}")
    if intra:
        lines.append(
            f"| {pass_size}, one run on {result['onnx_threads']} intra-op threads (before "
            f"`Lanes`) | - | {_cell(intra)} |"
        )
    lines.append(
        f"| {pass_size}, one thread | {_cell(b[f'torch_1thread_b{pass_size}'])} | "
        f"{_cell(b[f'onnx_1thread_b{pass_size}'])} |"
    )
    speed = r[f"onnx_vs_torch_bare_b{pass_size}"]
    core = r[f"onnx_vs_torch_bare_1thread_b{pass_size}"]
    lines += [
        "",
        f"ONNX Runtime vs torch eager, bare, {pass_size} per pass: {speed['median']}x (median "
        f"round), {speed['best_over_best']}x best vs best; on one thread each "
        f"{core['median']}x (median round); target >= {result['target_onnx_vs_torch']}x: "
        f"{'met' if result['meets_onnx_target'] else 'not met'}. torch eager on 2 threads "
        "collapses when the machine is oversubscribed (its OpenMP threads wait on each other), "
        "so the one-thread ratio is the fairer one here.",
        "",
        f"## End to end (ratio: to ONNX Runtime bare at {pass_size} per pass, same round)",
        "",
        "| path | natural photos (JPEG) | ratio | small PNGs | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {
        "onnx_sequential": "files -> vectors, Embedder sequential (ONNX Runtime)",
        "onnx_pipelined": "files -> vectors, Embedder pipelined (ONNX Runtime)",
        "torch_pipelined": "files -> vectors, Embedder pipelined (torch eager)",
        "predict": f"`/predict`, real `labelwheel serve`, {result['predict_tasks_per_request']} "
        "tasks per request",
        "predict_one": f"`/predict`, the round's {result['images_per_set_and_round']} tasks in "
        "one request (Label Studio's Retrieve predictions; images of their own)",
    }
    for key, label in labels.items():
        cells = []
        for s in SETS:
            cells += [_cell(e[f"{key}_{s}"]), f"{r[f'{key}_{s}_vs_{ref}']['median']}x"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    stage = result["cpu_ms_per_image_one_thread_median"]
    ceiling = result["cpu_bound_ceiling_vs_bare"]
    lines += [
        "",
        "Pipelined vs sequential (median round): "
        + ", ".join(f"{s} {r[f'pipelined_vs_sequential_{s}']['median']}x" for s in SETS)
        + "; in "
        + ", ".join(
            f"{v['pairs']} paired runs on {s}: median {v['median']}x (quartiles "
            f"{v['quartiles'][0]}-{v['quartiles'][1]})"
            for s, v in result.get("pipelined_vs_sequential_pairs", {}).items()
        )
        + ". Sequential, reading on "
        + f"{result.get('local_read_threads', '?')} threads (cores + 1, what the library uses "
        "for local reads) vs 8 (the fetch threads, for network reads): "
        + ", ".join(
            f"{s} median {v['median']}x in {v['pairs']} paired runs (quartiles "
            f"{v['quartiles'][0]}-{v['quartiles'][1]})"
            for s, v in result.get("local_threads_vs_8_pairs", {}).items()
        )
        + ".",
        "",
        "**Target** (issue 14): `/predict` >= "
        f"{result['target_predict_vs_bare']}x the bare path, judged on the bare path from the "
        "same image files: the faster of the Embedder's pipelined and sequential files -> "
        "vectors in the same round (ONNX Runtime, reading local files on as many threads as "
        "the library uses for local reads), median round: "
        + "; ".join(
            f"{s}: {result['predict_tasks_per_request']} per request "
            f"{r[f'predict_{s}_vs_embedder_best_{s}']['median']}x "
            f"({_met(result, f'predict_{s}')}), all in one request "
            f"{r[f'predict_one_{s}_vs_embedder_best_{s}']['median']}x "
            f"({_met(result, f'predict_one_{s}')})"
            for s in SETS
        )
        + ". Against the bare forward pass alone (the column above, decoding excluded): "
        + ", ".join(
            f"{s} {r[f'predict_{s}_vs_{ref}']['median']}x / "
            f"{r[f'predict_one_{s}_vs_{ref}']['median']}x"
            for s in SETS
        )
        + ": on 2 cores decoding cannot hide behind a pass that already uses every core, so no "
        "path from files reaches the forward pass's rate (the CPU-bound ceiling below). What "
        "`/predict` adds to files -> vectors: an HTTP request, reading Label Studio local-files "
        "references under the root, the embedding cache on disk, the image-hash records, "
        "pre-labels and queue scores, the JSON answer.",
        "",
        "CPU time per image on one thread (median): forward pass "
        f"{stage[f'onnx_forward_1thread_b{pass_size}']} ms; decode + resize + normalise: photos "
        f"{stage['prepare_photos']} ms, small PNGs {stage['prepare_small_pngs']} ms. When the "
        "CPUs are the limit, an end-to-end path can reach at most forward / (forward + "
        f"prepare) of the bare rate: photos {ceiling['photos']}x, small PNGs "
        f"{ceiling['small_pngs']}x.",
        "",
        "## The backbone pass size at 224 px",
        "",
    ]
    medians = {batch: b[f"onnx_b{batch}"]["median"] for batch in batches}
    best = max(medians, key=lambda k: medians[k])
    lines.append(
        "ONNX Runtime, median round: "
        + ", ".join(f"{k} per pass {v} img/s" for k, v in medians.items())
        + ". "
        + (
            f"The {pass_size}-image cap does not limit throughput: bigger passes are no faster "
            "on this CPU, so no larger cap is proposed (it would only raise /predict's memory)."
            if medians[pass_size] >= 0.95 * medians[best]
            else f"{best} per pass is {round(medians[best] / medians[pass_size], 2)}x the "
            f"{pass_size}-image pass: see benchmarks/predict_memory.py before raising the cap."
        )
    )
    memory = results / "predict_memory_pipelined.json"
    if memory.is_file():
        mem = json.loads(memory.read_text())
        lines += [
            "",
            f"Memory with the pipelined Embedder (`{memory.name}`, benchmarks/predict_memory.py, "
            f"{mem['images']} x {mem['image_size']} PNGs, measured {mem['measured']}): growth "
            + ", ".join(
                f"+{r['peak_minus_baseline_mib']} MiB at {r['batch']} per request"
                for r in mem["runs"]
            )
            + f" (bound {mem['bound_growth_mib']} MiB: "
            f"{'within' if mem['within_bound'] else 'NOT within'}), spread {mem['spread_mib']} "
            f"MiB (bound {mem['max_spread_mib']}).",
        ]
    lines.append("")
    return "\n".join(lines)


def _met(result: dict[str, Any], key: str) -> str:
    return "met" if result["meets_predict_target"][key] else "not met"
