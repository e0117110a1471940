"""SimilarityEvaluator on SICK_train against encoding every pair's sentences anew.

Run: python benchmarks/evaluator.py
Prints one JSON object. The pretrained MiniLM with mean pooling; ours is
`SimilarityEvaluator(..., preprocessor=pre).evaluate()` (each distinct
sentence once, length-bucketed); the peers, measured in the same run, score
the same pairs by encoding both sides of every pair: with the same
length-bucketed `encode_texts`, and with a plain `predict` on the
preprocessor's fixed length (128). Spearman correlations are printed to show
the scores agree.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(__file__)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from keras_space.utils import set_deterministic  # noqa: E402

SICK = os.path.join(HERE, "..", "..", "shared", "data", "sick", "SICK_train.txt")


def cosine(u, v):
    u, v = np.asarray(u, "float64"), np.asarray(v, "float64")
    return np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))


def main():
    set_deterministic(0)  # before TensorFlow starts
    import keras_hub

    from keras_space.callbacks import SimilarityEvaluator
    from keras_space.datasets import load_sick
    from keras_space.models import encode_texts, sentence_encoder
    from keras_space.utils import minilm_path

    data = load_sick(SICK)
    a, b, gold = list(data.sentences_a), list(data.sentences_b), np.asarray(data.relatedness)
    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=128)
    encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), pooling="mean")
    encode_texts(encoder, pre, a[:64])  # warm-up: trace the bucket shapes once
    evaluator = SimilarityEvaluator((a, b), gold, encoder, preprocessor=pre)
    start = time.perf_counter()
    ours = evaluator.evaluate()
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    bucketed = cosine(encode_texts(encoder, pre, a), encode_texts(encoder, pre, b))
    bucketed_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = cosine(*(encoder.predict(pre(x), batch_size=64, verbose=0) for x in (a, b)))
    plain_s = time.perf_counter() - start
    print(json.dumps({
        "pairs": len(a),
        "sides": 2 * len(a),
        "distinct_sentences": evaluator.num_distinct,
        "ours_s": round(ours_s, 1),
        "every_pair_bucketed_s": round(bucketed_s, 1),
        "every_pair_fixed_length_s": round(plain_s, 1),
        "speedup_vs_every_pair_bucketed": round(bucketed_s / ours_s, 2),
        "speedup_vs_every_pair_fixed_length": round(plain_s / ours_s, 2),
        "spearman": {
            "ours": round(float(ours[f"{evaluator.name}_spearman"]), 6),
            "every_pair_bucketed": round(float(stats.spearmanr(bucketed, gold)[0]), 6),
            "every_pair_fixed_length": round(float(stats.spearmanr(plain, gold)[0]), 6),
        },
    }))


if __name__ == "__main__":
    main()
