"""P-tuning vs full fine-tuning of the pretrained MiniLM: trainable parameters and step time.

Run: python benchmarks/prompt_encoder.py [--batch 16] [--length 64] [--virtual 16]
Prints one JSON object. The same MiniLM backbone (6 layers, 384 wide) with a
2-class head is trained with `model.fit` (AdamW) by:
  - full fine-tuning, the peer: the backbone plus a Dense head on [CLS],
    everything trainable (what keras-hub's BertTextClassifier does),
  - P-tuning, prefix mode, MLP and LSTM encoders, backbone frozen,
  - P-tuning, template mode (virtual tokens inside the sequence), MLP encoder;
  - deep prompts (P-tuning v2: a prompt at every layer), MLP encoder;
  - LoRA, keras-hub's `enable_lora(4)` on the query and value projections, no
    prompt (biases frozen), Dense head on [CLS];
  - P-tuning (prefix, MLP) + LoRA rank 4 (`lora_rank=4`);
  - the similarity head (`head="similarity"`: one virtual token in a template,
    the pair's second sentence the same rows): three passes through the backbone;
time per training step is the best over rounds that visit every model in
turn (this shared machine flips between two speeds, a factor 2 apart, so the
median is not stable; the best is), reported as a ratio to full fine-tuning.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.models import p_tuning_model  # noqa: E402
from keras_space.utils import minilm_path  # noqa: E402


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def full_finetune(backbone):
    backbone.trainable = True
    pooled = backbone.output["sequence_output"][:, 0, :]
    return keras.Model(backbone.input, keras.layers.Dense(2)(pooled))


def lora_only(backbone, rank):
    """keras-hub's own LoRA, factors only (the projections' biases frozen), [CLS] head."""
    backbone.enable_lora(rank)
    for w in backbone.trainable_weights:
        w.trainable = w.name.startswith("lora_kernel_")
    pooled = backbone.output["sequence_output"][:, 0, :]
    return keras.Model(backbone.input, keras.layers.Dense(2)(pooled))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--virtual", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.batch * 4
    length = args.length
    x = {
        "token_ids": rng.integers(1000, 30000, size=(n, length)).astype("int32"),
        "segment_ids": np.zeros((n, length), "int32"),
        "padding_mask": np.ones((n, length), "int32"),
    }
    x["token_ids"][:, 0] = 101
    x["token_ids"][:, 1 : 1 + args.virtual] = np.arange(1, 1 + args.virtual)  # template slots
    y = rng.integers(0, 2, size=n)

    path = minilm_path()
    models = {}
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    models["full fine-tuning"] = full_finetune(backbone)
    for name, kw in {
        "p-tuning prefix mlp": dict(encoder="mlp"),
        "p-tuning prefix lstm": dict(encoder="lstm"),
        "p-tuning template mlp": dict(encoder="mlp", placeholder_ids=list(range(1, 1 + args.virtual))),
        "p-tuning v2 deep mlp": dict(encoder="mlp", depth="deep"),
        "p-tuning prefix mlp + lora 4": dict(encoder="mlp", lora_rank=4),
    }.items():
        b = keras_hub.models.BertBackbone.from_preset(path)
        models[name] = p_tuning_model(b, num_classes=2, num_virtual_tokens=args.virtual, **kw)
    models["lora 4, no prompt"] = lora_only(keras_hub.models.BertBackbone.from_preset(path), 4)
    models["similarity head, 1 token"] = p_tuning_model(
        keras_hub.models.BertBackbone.from_preset(path), num_classes=2, head="similarity",
        num_virtual_tokens=1, placeholder_ids=[1])
    inputs = {name: [x, x] if name.startswith("similarity") else x for name in models}

    backbone_params = count(backbone.weights)
    result = {
        "command": "python benchmarks/prompt_encoder.py " + " ".join(sys.argv[1:]),
        "batch": args.batch,
        "sequence_length": length,
        "num_virtual_tokens": args.virtual,
        "backbone_parameters": backbone_params,
    }
    for m in models.values():
        m.compile(keras.optimizers.AdamW(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for name, m in models.items():
        m.fit(inputs[name], y, batch_size=args.batch, epochs=1, verbose=0)  # trace + warm up
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            start = time.perf_counter()
            m.fit(inputs[name], y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            times[name].append((time.perf_counter() - start) / 4)
    full_time = float(np.min(times["full fine-tuning"]))
    full_params = count(models["full fine-tuning"].trainable_weights)
    for name, m in models.items():
        t = float(np.min(times[name]))
        params = count(m.trainable_weights)
        result[name] = {
            "trainable_parameters": params,
            "trainable_ratio_vs_full": params / full_params,
            "step_seconds": t,
            "step_time_ratio_vs_full": t / full_time,
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
