"""Unsupervised SimCSE fine-tuning of the pretrained MiniLM at batch 256 on a CPU.

Run: python examples/simcse_gradcache.py --sts-dir ../shared/data/sts [--steps 12]

Each sentence is its own positive under two dropout masks (unsupervised
SimCSE); the InfoNCE loss over a batch of 256 pairs is trained exactly with
GradCacheModel in micro-batches of 32, so only 32 sentences' activations are
in memory at a time. Training sentences: distinct STS 2012-2015 sentences;
evaluation: Spearman x 100 of cosine similarity on all scored STS 2016 pairs
(SimilarityEvaluator), before and after.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.callbacks import SimilarityEvaluator  # noqa: E402
from keras_space.datasets import load_sts  # noqa: E402
from keras_space.losses import InfoNCE  # noqa: E402
from keras_space.models import GradCacheModel, encode_texts, sentence_encoder  # noqa: E402
from keras_space.utils import minilm_path, set_deterministic  # noqa: E402

DEFAULT_STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--sequence-length", type=int, default=32)
    args = parser.parse_args()
    import keras_hub

    set_deterministic(0)
    data = load_sts(args.sts_dir)
    train = sorted({s for name, (s1, s2, _) in data.items() if not name.startswith("2016") for s in (*s1, *s2)})
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))[: args.steps * args.batch_size]]
    eval_pairs = [d for name, d in data.items() if name.startswith("2016")]
    s1 = [s for d in eval_pairs for s in d[0]]
    s2 = [s for d in eval_pairs for s in d[1]]
    gold = np.concatenate([d[2] for d in eval_pairs])

    path = minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    eval_pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=128)
    train_pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=args.sequence_length)
    encoder = sentence_encoder(backbone, "mean")
    evaluator = SimilarityEvaluator(
        (s1, s2), gold, encoder, encode=lambda enc, x: encode_texts(enc, eval_pre, x), name="sts16", verbose=1
    )
    before = evaluator.evaluate()["sts16_spearman"]
    print(f"STS16 ({len(gold)} pairs) Spearman x 100 before: {100 * before:.2f}")

    features = {k: np.asarray(v) for k, v in train_pre(train).items()}
    model = GradCacheModel(encoder, micro_batch_size=args.micro_batch_size)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss=InfoNCE(temperature=0.05))
    start = time.perf_counter()
    history = model.fit(
        (features, features), batch_size=args.batch_size, epochs=1, shuffle=False, verbose=2, callbacks=[evaluator]
    )
    seconds = time.perf_counter() - start
    after = history.history["sts16_spearman"][-1]
    print(
        f"{args.steps} steps of batch {args.batch_size} (micro-batches of {args.micro_batch_size}) "
        f"in {seconds:.0f} s; final train loss {history.history['loss'][-1]:.4f}, "
        f"in-batch accuracy {history.history['accuracy'][-1]:.3f}"
    )
    print(f"STS16 Spearman x 100: before {100 * before:.2f}, after {100 * after:.2f}")


if __name__ == "__main__":
    main()
