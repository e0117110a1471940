"""Token mixers vs keras.layers.MultiHeadAttention: forward+backward time and peak memory.

Run: python benchmarks/token_mixers.py [--lengths 128 512 2048 8192] [--channels 128]
Prints one JSON object. Each (mixer, sequence length) runs in its own process
(batch 1, `--channels` wide): one compiled forward+backward step (gradients of
the summed output with respect to the input and every weight), the best of 3
timed steps after a warm-up, and the peak resident memory the step adds to
the process (peak RSS during the steps minus RSS before the first step, so
weights and the TensorFlow runtime are not counted). The peer is
`MultiHeadAttention(num_heads=4, key_dim=channels/4)` inside the same
pre-norm residual block shape (x + MHA(LN(x))), measured in the same run;
figures are ratios to it, and the growth exponent is the slope of log(time)
(and log(memory)) against log(length), fitted over all lengths, and over the
two longest (the fixed per-step overhead flattens the short end).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MIXERS = {
    "MultiHeadAttention": "mha",
    "MLPMixerBlock": "dict(tokens_mlp_dim=256, channels_mlp_dim=2 * c)",
    "GMLPBlock": "dict(ffn_dim=2 * c)",
    "GMLPBlock+tiny attention": "dict(ffn_dim=2 * c, tiny_attention_dim=64)",
    "FNetBlock": "dict(ffn_dim=2 * c)",
    "ResMLPBlock": "dict(channels_mlp_dim=2 * c)",
    "ExternalAttention": "dict(memory_units=64)",
    "SynthesizerAttention (random)": "dict(num_heads=4, mode='random')",
    "SynthesizerAttention (dense)": "dict(num_heads=4, mode='dense')",
}


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(name, length, channels):
    import keras
    import tensorflow as tf

    import keras_space.layers as L

    c = channels
    x = tf.random.normal((1, length, c))
    if MIXERS[name] == "mha":
        inp = keras.Input((length, c))
        att = keras.layers.MultiHeadAttention(num_heads=4, key_dim=c // 4)
        h = keras.layers.LayerNormalization()(inp)
        layer = keras.Model(inp, inp + att(h, h))
    else:
        cls = getattr(L, name.split(" ")[0].split("+")[0])
        layer = cls(**eval(MIXERS[name], {"c": c}))  # noqa: S307 - fixed table above
    layer(x)

    @tf.function(jit_compile=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(y, [x] + layer.trainable_weights)

    base = current_rss_mb()
    step(x)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = step(x)
        _ = [np.asarray(g) for g in out[:1]]
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"time_s": min(times), "memory_mb": max(peak - base, 1.0)}))


def run_one(name, length, channels):
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(length), str(channels)],
        capture_output=True, text=True, timeout=900,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (out.stderr or out.stdout).strip().splitlines()[-1][:200]}


def slope(lengths, values):
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return

    raw = {name: {n: run_one(name, n, args.channels) for n in args.lengths} for name in MIXERS}
    peer = raw["MultiHeadAttention"]
    result = {
        "command": "python benchmarks/token_mixers.py " + " ".join(sys.argv[1:]),
        "channels": args.channels,
        "batch": 1,
        "lengths": args.lengths,
    }
    for name, by_len in raw.items():
        ok = [n for n in args.lengths if "error" not in by_len[n]]
        entry = {
            str(n): (
                by_len[n]
                if "error" in by_len[n]
                else {
                    "time_s": round(by_len[n]["time_s"], 4),
                    "memory_mb": round(by_len[n]["memory_mb"], 1),
                    "time_ratio_vs_mha": round(by_len[n]["time_s"] / peer[n]["time_s"], 3),
                    "memory_ratio_vs_mha": round(by_len[n]["memory_mb"] / peer[n]["memory_mb"], 3),
                }
            )
            for n in args.lengths
        }
        if len(ok) >= 2:
            entry["time_growth_exponent"] = round(slope(ok, [by_len[n]["time_s"] for n in ok]), 2)
            entry["memory_growth_exponent"] = round(slope(ok, [by_len[n]["memory_mb"] for n in ok]), 2)
            last = ok[-2:]  # the two longest: closest to the asymptotic order
            entry["time_growth_exponent_longest_two"] = round(slope(last, [by_len[n]["time_s"] for n in last]), 2)
            entry["memory_growth_exponent_longest_two"] = round(
                slope(last, [by_len[n]["memory_mb"] for n in last]), 2
            )
        result[name] = entry
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
