#!/usr/bin/env python3
"""Synthetic GPU result records for the `plot` and `compare` tests (tests/cli_plot.sh,
tests/cli_compare.sh), made from a real CPU run so that params, outputs and cost fields are the
harness's own:

    build/attn-harness run cases/smoke.ini --cpu-only --json /tmp/cpu.jsonl
    python3 tests/data/make_fixtures.py /tmp/cpu.jsonl tests/data

They look like `attn-harness run --json` on a GPU (hx_json_record: device, run.gpu with the
measured peaks, timing of >= 20 samples, derived TFLOP/s, GB/s and % of peak, err_ratio,
err_by_row) plus harness/peers/torch_peers.py records (torch_sdpa_flash: "out" only, null
peaks). The times are invented (seeded, fixed): nothing here is a measurement.

  h200_base.jsonl     an H200 run: emulated, simple, split_kv / vec
  h200_torch.jsonl    PyTorch peers on the same H200
  h200_noise.jsonl    a rerun: every time within its recorded spread; one max_abs drift x2
  h200_slow.jsonl     a rerun with smoke_decode_gqa4_nhd/split_kv 1.6x slower
  h200_status.jsonl   a rerun with smoke_merge/vec FAIL_NUMERIC
  h200_shard0.jsonl, h200_shard1.jsonl  h200_noise in two shards, one record in both
  h100_base.jsonl     an H100 run (a second GPU for the figure across GPUs)
  malformed.jsonl     two records, then a truncated line 3
"""
import copy
import json
import random
import sys

CASES = {  # case: GPU variants (the first is the path's baseline)
    "smoke_prefill_causal_gqa2": ["simple"],
    "smoke_merge": ["simple", "vec"],
    "smoke_cache_write_hnd_bs7": ["simple", "vec"],
    "smoke_decode_gqa4_nhd": ["simple", "split_kv"],
    "smoke_decode_fp8_shuffled_high_blocks": ["simple", "split_kv"],
    "smoke_mla_decode_bf16": ["simple", "split_kv"],
}
TORCH = ["smoke_prefill_causal_gqa2", "smoke_decode_gqa4_nhd"]
GPUS = {
    "h200": {"index": 0, "name": "NVIDIA H200", "arch": "sm_90", "multiprocessors": 132,
             "warp_size": 32, "l2_bytes": 62914560, "runtime_version": 13000,
             "driver_version": 13000, "read_gbps": 4263.0, "copy_gbps": 3922.7,
             "mma_tflops": 641.8},
    "h100": {"index": 0, "name": "NVIDIA H100 80GB HBM3", "arch": "sm_90", "multiprocessors": 132,
             "warp_size": 32, "l2_bytes": 52428800, "runtime_version": 13000,
             "driver_version": 13000, "read_gbps": 3105.0, "copy_gbps": 2890.0,
             "mma_tflops": 645.0},
}


def rebucket(prof, n=16):
    """At most n buckets (max over merged ones): small fixtures, same shape of data."""
    m = len(prof["max_abs"])
    if m <= n:
        return prof
    out = {"axis": prof["axis"], "rows": prof["rows"], "max_abs": [], "headroom": []}
    for b in range(n):
        lo, hi = b * m // n, (b + 1) * m // n
        for k in ("max_abs", "headroom"):
            vals = [v for v in prof[k][lo:hi] if v is not None]
            out[k].append(max(vals) if vals else None)
    return out


def gpu_run(gpu, cpu):
    run = dict(cpu["run"])
    run.update({"build": "cuda GNU-12.2.0 Release nvcc-13.0 sm_90", "host": "gpu-node",
                "started": "2026-11-21T10:00:00Z",
                "argv": "build/attn-harness run cases/smoke.ini --json results/x.jsonl",
                "gpu": dict(GPUS[gpu])})
    return run


def timed(rec, median_ms, rng, peaks):
    sd = median_ms * rng.uniform(0.01, 0.03)
    rec["timing"] = {"samples": 64, "median_ms": median_ms, "min_ms": median_ms - 1.5 * sd,
                     "max_ms": median_ms + 4 * sd, "stddev_ms": sd}
    s = median_ms * 1e-3
    rec["tflops"] = rec["flops"] / s * 1e-12 if rec["flops"] is not None else None
    rec["gbps"] = rec["bytes"] / s * 1e-9 if rec["bytes"] is not None else None
    if peaks is None:
        rec["pct_peak"], rec["peak"] = None, ""
    elif not rec["flops"]:
        rec["pct_peak"], rec["peak"] = 100 * rec["gbps"] / peaks["copy_gbps"], "copy_bw"
    else:
        t_mem = rec["bytes"] / (peaks["read_gbps"] * 1e9)
        t_mma = rec["flops"] / (peaks["mma_tflops"] * 1e12)
        rec["pct_peak"] = 100 * max(t_mem, t_mma) / s
        rec["peak"] = "mma" if t_mma > t_mem else "read_bw"


def base_time(rec, variant, gpu):
    """Invented, plausible: a few us of launch plus bytes at some fraction of bandwidth."""
    bw = {"simple": 0.02, "split_kv": 0.5, "vec": 0.6, "torch_sdpa_flash": 0.1}[variant]
    peak = GPUS[gpu]["read_gbps"] * 1e9
    return 2e-3 + rec["bytes"] / (bw * peak) * 1e3


def records(cpu_recs, gpu, seed):
    rng = random.Random(seed)
    out, torch = [], []
    for case, variants in CASES.items():
        emu = copy.deepcopy(cpu_recs[case])
        emu["run"] = gpu_run(gpu, emu)
        out.append(emu)
        for v in variants:
            r = copy.deepcopy(emu)
            r["variant"], r["device"] = v, GPUS[gpu]["name"]
            r["reference"] = {"seconds": None, "gflops": None}
            f = rng.uniform(1.0, 1.3)  # a kernel's error next to the emulated one, still PASS
            f = min([f] + [0.98 / o["headroom"] for o in r["outputs"] if o["headroom"]])
            for o in r["outputs"]:
                o["max_abs"] = o["max_abs"] * f
                o["headroom"] = o["headroom"] * f
                if "err_by_row" in o:
                    p = rebucket(o["err_by_row"])
                    p["max_abs"] = [x if x is None else float("%.3g" % (x * f)) for x in p["max_abs"]]
                    p["headroom"] = [x if x is None else float("%.3g" % (x * f)) for x in p["headroom"]]
                    o["err_by_row"] = p
            eo = next((o for o in emu["outputs"] if o["name"] in ("out", "out_lat")), None)
            go = next((o for o in r["outputs"] if o["name"] in ("out", "out_lat")), None)
            r["err_ratio"] = go["max_abs"] / eo["max_abs"] if eo and eo["max_abs"] else None
            timed(r, base_time(r, v, gpu) * rng.uniform(0.9, 1.1), rng, GPUS[gpu])
            out.append(r)
        for o in emu["outputs"]:
            if "err_by_row" in o:
                o["err_by_row"] = rebucket(o["err_by_row"])
        if case in TORCH:
            t = copy.deepcopy(out[-len(variants)])
            t["variant"] = "torch_sdpa_flash"
            t["message"] = "SDPA flash: dense, GQA native (enable_gqa)"
            t["outputs"] = [dict(o) for o in t["outputs"] if o["name"] == "out"]
            for o in t["outputs"]:
                o.pop("err_by_row", None)
            t["err_ratio"] = None
            t["run"] = dict(t["run"], build="torch 2.11.0+cu130, python 3.12.3", dgemm_gflops=None,
                            blas="", gpu=dict(GPUS[gpu], read_gbps=None, copy_gbps=None,
                                              mma_tflops=None))
            timed(t, base_time(t, "torch_sdpa_flash", gpu), rng, None)
            torch.append(t)
    return out, torch


def write(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def main():
    src, dst = sys.argv[1], sys.argv[2]
    cpu = {}
    for line in open(src):
        r = json.loads(line)
        cpu[r["case"]] = r
    base, torch = records(cpu, "h200", 1)
    write(dst + "/h200_base.jsonl", base)
    write(dst + "/h200_torch.jsonl", torch)
    h100, _ = records(cpu, "h100", 2)
    write(dst + "/h100_base.jsonl", h100)

    rng = random.Random(3)
    noise = copy.deepcopy(base)
    for r in noise:
        t = r["timing"]
        if t["samples"] > 1:  # move the median by at most half its spread
            t["median_ms"] += rng.uniform(-0.5, 0.5) * t["stddev_ms"]
        if r["case"] == "smoke_decode_fp8_shuffled_high_blocks" and r["variant"] == "split_kv":
            r["outputs"][0]["max_abs"] *= 2  # still inside the tolerance: drift, not failure
    write(dst + "/h200_noise.jsonl", noise)
    write(dst + "/h200_shard0.jsonl", noise[0::2])
    write(dst + "/h200_shard1.jsonl", noise[1::2] + [noise[0]])

    slow = copy.deepcopy(base)
    for r in slow:
        if r["case"] == "smoke_decode_gqa4_nhd" and r["variant"] == "split_kv":
            for k in ("median_ms", "min_ms", "max_ms", "stddev_ms"):
                r["timing"][k] *= 1.6
    write(dst + "/h200_slow.jsonl", slow)

    status = copy.deepcopy(base)
    for r in status:
        if r["case"] == "smoke_merge" and r["variant"] == "vec":
            r["status"] = r["outputs"][0]["status"] = "FAIL_NUMERIC"
            r["outputs"][0]["n_bad"] = 3
            r["outputs"][0]["headroom"] = 1.7
    write(dst + "/h200_status.jsonl", status)

    with open(dst + "/malformed.jsonl", "w") as f:
        for r in base[:2]:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
        f.write(json.dumps(base[2], separators=(",", ":"))[:300] + "\n")


if __name__ == "__main__":
    main()
