"""Few-shot text classification with the frozen pretrained MiniLM: linear probe vs
P-tuning (MLP and LSTM prompt encoders) vs full fine-tuning.

Run: python examples/p_tuning.py [--train train.tsv --test test.tsv] [--shots 16] [--seeds 2]

Data: pass your own `label<TAB>text` files, or let the example write one out
from the SemEval STS files in ../shared/data/sts: the task is to tell which
corpus a sentence comes from (news headlines, image captions, forum answers,
forum posts on beliefs, student answers), 5 classes, `--shots` training
sentences per class, 100 held-out sentences per class.

Methods, all on the same sentences:
  - linear probe: scikit-learn logistic regression on the frozen mean-pooled
    sentence embeddings;
  - P-tuning: `p_tuning_model` with 16 virtual tokens as a prefix, MLP or LSTM
    encoder, a Dense head on the mean-pooled states, backbone frozen;
  - full fine-tuning: MiniLM + mean pooling + Dense, every weight trainable.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from keras_space.datasets import load_sts  # noqa: E402
from keras_space.models import encode_texts, p_tuning_model, sentence_encoder  # noqa: E402
from keras_space.utils import minilm_path  # noqa: E402

STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")
CORPORA = {
    "headlines": "2015/headlines.test.tsv",
    "image captions": "2015/images.test.tsv",
    "forum answers": "2015/answers-forums.test.tsv",
    "belief posts": "2015/belief.test.tsv",
    "student answers": "2015/answers-students.test.tsv",
}


def write_sts_task(folder, shots, seed, held_out=100):
    """Write train.tsv/test.tsv (label<TAB>text) from the STS corpora."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, rel in enumerate(CORPORA.values()):
        s1, s2, _ = load_sts(os.path.join(STS, rel))
        sentences = sorted({s.strip() for s in s1 + s2 if len(s.split()) >= 4})
        picked = rng.choice(len(sentences), size=shots + held_out, replace=False)
        rows = [(label, sentences[i]) for i in picked]
        train += rows[:shots]
        test += rows[shots:]
    for name, rows in (("train", train), ("test", test)):
        with open(os.path.join(folder, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.writelines(f"{y}\t{t}\n" for y, t in rows)
    return os.path.join(folder, "train.tsv"), os.path.join(folder, "test.tsv")


def read(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return [t for _, t in rows], np.array([int(y) for y, _ in rows])


def fit_and_score(model, x_train, y_train, x_test, y_test, lr, epochs):
    model.compile(
        keras.optimizers.AdamW(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=16, epochs=epochs, verbose=0)
    return float(np.mean(np.argmax(model.predict(x_test, batch_size=64, verbose=0), 1) == y_test))


def evaluate(seed, args, pre, path, results):
    """One draw of the few-shot set: every method's held-out accuracy and time."""
    if args.train:
        train_file, test_file = args.train, args.test
    else:
        os.makedirs("p_tuning_data", exist_ok=True)
        train_file, test_file = write_sts_task("p_tuning_data", args.shots, seed)
    texts, y = read(train_file)
    test_texts, y_test = read(test_file)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    x = {k: np.asarray(v) for k, v in pre(texts).items()}
    x_test = {k: np.asarray(v) for k, v in pre(test_texts).items()}

    def run(name, fn):
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        acc = fn()
        results.setdefault(name, []).append((acc, time.perf_counter() - start))
        print(f"seed {seed}  {name:<28s} accuracy {acc:.3f}  ({time.perf_counter() - start:.0f} s)")

    def probe():
        encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), pooling="mean")
        train_vec = encode_texts(encoder, pre, texts)
        test_vec = encode_texts(encoder, pre, test_texts)
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(train_vec, y)
        return float(clf.score(test_vec, y_test))

    def p_tuning(encoder, lr=3e-3, epochs=20):
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        model = p_tuning_model(
            backbone,
            num_classes=num_classes,
            num_virtual_tokens=16,
            encoder=encoder,
            pooling="mean",
            seed=seed,
        )
        return fit_and_score(model, x, y, x_test, y_test, lr, epochs)

    run("linear probe", probe)
    run("P-tuning, MLP encoder", lambda: p_tuning("mlp"))
    run("P-tuning, LSTM encoder", lambda: p_tuning("lstm"))
    def full_fine_tuning(lr=5e-5, epochs=10):
        encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), pooling="mean")
        model = keras.Model(encoder.input, keras.layers.Dense(num_classes)(encoder.output))
        return fit_and_score(model, x, y, x_test, y_test, lr, epochs)

    run("full fine-tuning", full_fine_tuning)



def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--train")
    parser.add_argument("--test")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()

    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=args.length)
    results = {}
    for seed in range(args.seeds):
        evaluate(seed, args, pre, path, results)

    print(f"\n{args.shots} examples per class, mean over {args.seeds} draws")
    print("| method | held-out accuracy | time per run |")
    print("|---|---|---|")
    for name, runs in results.items():
        accs, times = zip(*runs, strict=True)
        print(f"| {name} | {np.mean(accs):.3f} | {np.mean(times):.0f} s |")


if __name__ == "__main__":
    main()
