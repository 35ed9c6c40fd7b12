"""Would a space-to-depth stem close onnxruntime's gap to LiteRT? (Issue 14: "the graph ... the stem".)

    python benchmarks/stem_s2d_bench.py MODEL.int8.onnx [--rounds 8]

The int8 model's stem is a 3x3 stride-2 convolution on 3 channels: a poor shape for onnxruntime's
integer kernels (the im2col rows are 27 bytes). Rearranged as space-to-depth (each 2x2 block of
pixels becomes 12 channels) it is a 2x2 stride-1 convolution with the same weights in new places
and zeros elsewhere: the same integer sums, so the outputs must be bit-identical. This builds that
variant (uint8 NHWC -> Transpose -> SpaceToDepth -> Transpose, then the existing graph), checks
the outputs, and times both at 1 and 2 threads (the adaptive classifier's spinning arm settings),
interleaved. Writes benchmarks/results/stem_s2d.{md,json}. Not shipped: see the results.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edgeclf import sysinfo
from edgeclf.outfiles import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def space_to_depth_stem(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its stride-2 3x3 stem convolution computed as space-to-depth + 2x2."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    users: dict[str, list] = {}
    for n in g.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    made_by = {o: n for n in g.node for o in n.output}
    image = g.input[0]
    channels = image.type.tensor_type.shape.dim[3].dim_value
    dq = users[image.name][0]  # image -> DQ -> Transpose(NCHW) -> Q -> DQ -> Conv (tf2onnx + QDQ)
    conv = users[users[users[users[dq.output[0]][0].output[0]][0].output[0]][0].output[0]][0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    if conv.op_type != "Conv" or attrs.get("strides") != [2, 2] or attrs.get("kernel_shape") != [3, 3] or attrs.get("pads") != [0, 0, 1, 1]:
        raise SystemExit(f"stem is not the expected 3x3 stride-2 convolution: {conv.op_type} {attrs}")
    w_init = inits[made_by[conv.input[1]].input[0]]
    w = numpy_helper.to_array(w_init)  # [out, C, 3, 3] int8, per-channel scales on axis 0 (kept)
    w2 = np.zeros((w.shape[0], 4 * channels, 2, 2), w.dtype)
    for dy in range(2):
        for dx in range(2):
            c0 = (dy * 2 + dx) * channels  # SpaceToDepth's channel order
            for bh in range(2):
                for bw in range(2):
                    kh, kw = 2 * bh + dy, 2 * bw + dx
                    if kh < 3 and kw < 3:
                        w2[:, c0:c0 + channels, bh, bw] = w[:, :, kh, kw]
    w_init.CopyFrom(numpy_helper.from_array(w2, w_init.name))
    for a in conv.attribute:
        if a.name == "strides":
            a.ints[:] = [1, 1]
        elif a.name == "kernel_shape":
            a.ints[:] = [2, 2]
    i = list(g.node).index(dq)
    for k, node in enumerate([
        helper.make_node("Transpose", [image.name], ["s2d_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("SpaceToDepth", ["s2d_nchw"], ["s2d_blocks"], blocksize=2),
        helper.make_node("Transpose", ["s2d_blocks"], ["s2d_nhwc"], perm=[0, 2, 3, 1]),
    ]):
        g.node.insert(i + k, node)
    dq.input[0] = "s2d_nhwc"
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model


def session(path: Path, threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "1")
    o.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=150, help="timed calls per variant per round")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        variant = Path(tmp) / "s2d.onnx"
        onnx.save(space_to_depth_stem(onnx.load(str(args.model))), str(variant))
        base = session(args.model, 1)
        image = base.get_inputs()[0]
        name = image.name
        x = np.random.default_rng(0).integers(0, 256, (8, *image.shape[1:]), dtype=np.uint8)
        diff = float(np.abs(base.run(None, {name: x})[0] - session(variant, 1).run(None, {name: x})[0]).max())
        timings: dict = {}
        for threads in (1, 2):
            runs = {"as exported": session(args.model, threads), "space-to-depth stem": session(variant, threads)}
            per_round: dict[str, list[float]] = {k: [] for k in runs}
            for r in range(args.rounds):
                for label, s in (list(runs.items()) if r % 2 == 0 else list(runs.items())[::-1]):
                    for _ in range(20):
                        s.run(None, {name: x[:1]})
                    t = []
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        s.run(None, {name: x[:1]})
                        t.append(time.perf_counter() - t0)
                    per_round[label].append(statistics.median(t) * 1e3)
            timings[threads] = {k: {"p50_ms_median": statistics.median(v), "p50_ms_rounds": v} for k, v in per_round.items()}
    machine = sysinfo.describe()
    out = ROOT / "benchmarks" / "results" / "stem_s2d"
    write_json(out.with_suffix(".json"), {"model": args.model.name, "max_abs_output_diff": diff, "timings": timings,
                                          "machine": {"cpu": machine["cpu"], "cores": machine["cores"]}, "rounds": args.rounds})
    lines = [f"# Space-to-depth stem vs as exported ({args.model.name})", "",
             f"Largest output difference over 8 random images: {diff:g} (0 = bit-identical). {args.rounds} interleaved "
             f"rounds of {args.calls} batch-1 calls, {machine['cpu']}, {machine['cores']} cores.", "",
             "| threads | as exported, p50 ms | space-to-depth stem, p50 ms | ratio |", "|---:|---:|---:|---:|"]
    for threads, t in timings.items():
        a, b = t["as exported"]["p50_ms_median"], t["space-to-depth stem"]["p50_ms_median"]
        lines.append(f"| {threads} | {a:.3f} | {b:.3f} | {b / a:.3f} |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
