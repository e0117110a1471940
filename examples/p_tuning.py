"""Few-shot classification with the frozen pretrained MiniLM: linear probe vs
P-tuning (each prompt encoder) vs full fine-tuning, on two tasks, over seeds.

Run: python examples/p_tuning.py [--tasks sts-corpus sick-entailment] [--seeds 3]
     python examples/p_tuning.py --train train.tsv --test test.tsv   # your own data

Tasks (built from ../shared/data, nothing downloaded):
  - sts-corpus: which of five SemEval STS 2015 corpora a sentence comes from
    (news headlines, image captions, forum answers, belief posts, student
    answers); 16 training sentences per class, 100 held-out per class.
  - sick-entailment: SICK's ENTAILMENT / NEUTRAL / CONTRADICTION label of a
    sentence pair (the pair is one input, `[CLS] a [SEP] b [SEP]`); 32 training
    pairs per class drawn from SICK_train, the 500 pairs of SICK_trial held out.
  - your own `label<TAB>text` files with --train/--test.

Methods, all on the same examples, one seed = one draw of the training set:
  - linear probe: scikit-learn logistic regression on the frozen mean-pooled
    embeddings of the input (for SICK, of the pair as one input; also the
    sentence-BERT features [u, v, |u-v|, u*v] of the two sentences, and
    [cos(a, b), cos("not" a, b)]);
  - P-tuning: `p_tuning_model` with its defaults (16 virtual tokens, prefix,
    a Dense head on the mean-pooled states), each prompt encoder, backbone
    frozen; AdamW 3e-3, 20 epochs of batch 16; the same with deep prompts
    (`depth="deep"`, P-tuning v2: a prompt at every layer); for pairs also each sentence
    prompted alone with a Dense head on [u, v, |u-v|, u*v] (the match of the
    second probe), and the similarity verbalizer: the encoder's own head,
    cosine similarity, read as [cos(a, b), cos(P a, b)] with P one virtual
    token started at "not" (template [CLS] [P] a [SEP]), the Dense head
    started at the logistic regression on the anchor's features (the third
    probe, the hand-written "not" without training): `p_tuning_model(...,
    head="similarity")`, also with LoRA beside it;
  - LoRA: keras-hub's `enable_lora(4)` on the query and value projections, no prompt
    (factors only), mean pooling + Dense; and P-tuning + LoRA
    (`p_tuning_model(..., lora_rank=4)`); the P-tuning optimiser (AdamW 3e-3, 20 epochs);
  - full fine-tuning: MiniLM + mean pooling + Dense, every weight trainable;
    AdamW 5e-5, 10 epochs.
`set_deterministic` is called before TensorFlow starts and every run reseeds
it, so a seed gives the same accuracy every time, in any process. Each run reports its
trainable weights and seconds per training step (the median epoch after the first; the
step-time ratios in the guide come from benchmarks/prompt_encoder.py on an idle machine).
Prints the table and one JSON object.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from keras_space.datasets import load_sick, load_sts  # noqa: E402
from keras_space.datasets.sick import JUDGMENTS  # noqa: E402
from keras_space.models import (  # noqa: E402
    apply_prompt_template,
    encode_texts,
    p_tuning_model,
    sentence_encoder,
)
from keras_space.utils import minilm_path, set_deterministic  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CORPORA = {
    "headlines": "2015/headlines.test.tsv",
    "image captions": "2015/images.test.tsv",
    "forum answers": "2015/answers-forums.test.tsv",
    "belief posts": "2015/belief.test.tsv",
    "student answers": "2015/answers-students.test.tsv",
}
ENCODERS = ("mlp", "lstm", "lstm_mlp")
LORA_RANK = 4


def sts_corpus_task(seed, shots=16, held_out=100):
    """(train_texts, train_y, test_texts, test_y): which STS corpus a sentence is from."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, rel in enumerate(CORPORA.values()):
        s1, s2, _ = load_sts(os.path.join(DATA, "sts", rel))
        sentences = sorted({s.strip() for s in s1 + s2 if len(s.split()) >= 4})
        picked = rng.choice(len(sentences), size=shots + held_out, replace=False)
        rows = [(label, sentences[i]) for i in picked]
        train += rows[:shots]
        test += rows[shots:]
    (y, x), (y_test, x_test) = zip(*train, strict=True), zip(*test, strict=True)
    return list(x), np.array(y), list(x_test), np.array(y_test)


def sick_entailment_task(seed, shots=32):
    """Pairs (a, b) with SICK's entailment judgment; SICK_trial held out whole."""
    rng = np.random.default_rng(seed)
    train = load_sick(os.path.join(DATA, "sick", "SICK_train.txt"))
    test = load_sick(os.path.join(DATA, "sick", "SICK_trial.txt"))
    label = {j: i for i, j in enumerate(JUDGMENTS)}
    y_all = np.array([label[j] for j in train.judgments])
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(y_all == c), size=shots, replace=False) for c in range(3)]
    )
    x = ([train.sentences_a[i] for i in picked], [train.sentences_b[i] for i in picked])
    x_test = (list(test.sentences_a), list(test.sentences_b))
    return x, y_all[picked], x_test, np.array([label[j] for j in test.judgments])


def read(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return [t for _, t in rows], np.array([int(y) for y, _ in rows])


def pair_features(u, v):
    """Sentence-BERT's pair features [u, v, |u-v|, u*v] (arrays or symbolic tensors)."""
    return keras.ops.concatenate([u, v, keras.ops.abs(u - v), u * v], axis=-1)


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def fit_and_score(model, x_train, y_train, x_test, y_test, lr, epochs):
    """Held-out accuracy, with the trainable parameter count and the seconds per training
    step (the median epoch after the first, which compiles)."""
    model.compile(
        keras.optimizers.AdamW(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    times = EpochTimes()
    model.fit(x_train, y_train, batch_size=16, epochs=epochs, verbose=0, callbacks=[times])
    epoch = np.median(times.seconds[1:] or times.seconds)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, batch_size=64, verbose=0), 1) == y_test))
    return {"accuracy": accuracy, "trainable": trainable_count(model),
            "step_s": float(epoch) / -(-len(y_train) // 16)}


def methods(texts, y, test_texts, y_test, pre, path, seed, epochs=20):
    """name -> zero-argument function returning held-out accuracy."""
    pairs = isinstance(texts, tuple)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    # keras-hub preprocessors read a positional tuple as (x, y): a pair goes in as x=(a, b)
    x = {k: np.asarray(v) for k, v in pre(x=texts).items()}
    x_test = {k: np.asarray(v) for k, v in pre(x=test_texts).items()}

    def encoder():
        return sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), pooling="mean")

    def fit_probe(features_train):
        return LogisticRegression(C=10.0, max_iter=5000).fit(features_train, y)

    def probe(features_train, features_test):
        clf = fit_probe(features_train)
        return {"accuracy": float(clf.score(features_test, y_test)),
                "trainable": int(clf.coef_.size + clf.intercept_.size), "step_s": None}

    def linear_probe():
        model = encoder()
        if not pairs:
            return probe(encode_texts(model, pre, texts), encode_texts(model, pre, test_texts))
        return probe(*(np.asarray(model.predict(v, batch_size=64, verbose=0)) for v in (x, x_test)))

    def sbert_probe():
        model = encoder()

        def features(a, b):
            u, v = encode_texts(model, pre, a), encode_texts(model, pre, b)
            return np.asarray(pair_features(u, v))

        return probe(features(*texts), features(*test_texts))

    def p_tuning(encoder_name, depth="shallow"):
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        model = p_tuning_model(backbone, num_classes=num_classes, encoder=encoder_name, seed=seed,
                               depth=depth)
        return fit_and_score(model, x, y, x_test, y_test, 3e-3, epochs)

    def siamese_p_tuning():
        # each sentence prompted alone through the same prompted encoder, the
        # sentence-BERT head on [u, v, |u-v|, u*v]: P-tuning's match for the
        # [u, v, |u-v|, u*v] probe
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        prompted = p_tuning_model(backbone, num_classes=1, seed=seed)
        encode = keras.Model(prompted.input, prompted.get_layer("mean_pooling").output)
        sides = [{k: keras.Input((None,), dtype="int32", name=f"{s}_{k}") for k in x} for s in "ab"]
        u, v = (encode(side) for side in sides)
        model = keras.Model(sides, keras.layers.Dense(num_classes)(pair_features(u, v)))

        def split(t):
            return [{k: np.asarray(w) for k, w in pre(list(side)).items()} for side in t]

        return fit_and_score(model, split(texts), y, split(test_texts), y_test, 3e-3, epochs)

    def similarity(lora_rank=None):
        # the library's similarity head: [cos(a, b), cos(P a, b)], one virtual token
        # anchored at "not" in the template [CLS] [P] a [SEP]
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        slot, anchor = (pre.tokenizer.token_to_id(t) for t in ("[unused1]", "not"))
        model = p_tuning_model(backbone, num_classes=num_classes, head="similarity",
                               num_virtual_tokens=1, placeholder_ids=[slot],
                               anchor_token_ids=[anchor], seed=seed, lora_rank=lora_rank)

        def data(a, b):
            first = apply_prompt_template({k: np.asarray(w) for k, w in pre(list(a)).items()},
                                          [slot, "text"], [slot])
            return [first, {k: np.asarray(w) for k, w in pre(list(b)).items()}]

        features = keras.Model(model.input, model.get_layer("similarities").output)
        return model, features, data(*texts), data(*test_texts)

    def similarity_probe():
        # the hand-written "not", no training: the similarity head's features at the anchor
        _, features, train, test = similarity()
        return probe(*(features.predict(d, batch_size=64, verbose=0) for d in (train, test)))

    def similarity_p_tuning(lora_rank=None):
        # linear probing, then tuning: the head starts at the probe's solution on
        # the anchor's features, then the prompt (and LoRA) and the head train
        model, features, train, test = similarity(lora_rank)
        clf = fit_probe(features.predict(train, batch_size=64, verbose=0))
        model.get_layer("classifier").set_weights([clf.coef_.T.astype("float32"),
                                                   clf.intercept_.astype("float32")])
        return fit_and_score(model, train, y, test, y_test, 3e-3, epochs)

    def lora(rank=LORA_RANK):
        # keras-hub's own LoRA on the sentence encoder, no prompt (its biases frozen, as
        # p_tuning_model does and HF PEFT's default)
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        backbone.enable_lora(rank)
        for w in backbone.trainable_weights:
            w.trainable = w.name.startswith("lora_kernel_")
        encoder_model = sentence_encoder(backbone, pooling="mean")
        model = keras.Model(encoder_model.input, keras.layers.Dense(num_classes)(encoder_model.output))
        return fit_and_score(model, x, y, x_test, y_test, 3e-3, epochs)

    def prompts_and_lora(rank=LORA_RANK):
        backbone = keras_hub.models.BertBackbone.from_preset(path)
        model = p_tuning_model(backbone, num_classes=num_classes, seed=seed, lora_rank=rank)
        return fit_and_score(model, x, y, x_test, y_test, 3e-3, epochs)

    def full_fine_tuning():
        model = encoder()
        model = keras.Model(model.input, keras.layers.Dense(num_classes)(model.output))
        return fit_and_score(model, x, y, x_test, y_test, 5e-5, 10)

    out = {"linear probe (mean-pooled)": linear_probe}
    if pairs:
        out["linear probe ([u, v, |u-v|, u*v])"] = sbert_probe
    for name in ENCODERS:
        out[f"P-tuning, {name} encoder"] = lambda name=name: p_tuning(name)
    out["P-tuning v2, deep prompts, mlp encoder"] = lambda: p_tuning("mlp", depth="deep")
    out[f"LoRA (rank {LORA_RANK}), no prompt"] = lora
    out[f"P-tuning + LoRA (rank {LORA_RANK})"] = prompts_and_lora
    if pairs:
        out["P-tuning, mlp, each sentence alone"] = siamese_p_tuning
        out["linear probe (cos(a, b), cos('not' a, b))"] = similarity_probe
        out["P-tuning, similarity head"] = similarity_p_tuning
        out[f"P-tuning, similarity head + LoRA (rank {LORA_RANK})"] = lambda: similarity_p_tuning(LORA_RANK)
    out["full fine-tuning"] = full_fine_tuning
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["sts-corpus", "sick-entailment"])
    parser.add_argument("--train")
    parser.add_argument("--test")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="method name prefixes to run")
    parser.add_argument("--epochs", type=int, default=20, help="P-tuning epochs")
    args = parser.parse_args()

    set_deterministic(0)  # before TensorFlow starts (reseeded before each run below)
    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=args.length)
    tasks = {"sts-corpus": sts_corpus_task, "sick-entailment": sick_entailment_task}
    if args.train:
        tasks = {"your data": lambda seed: (*read(args.train), *read(args.test))}
    results = {}
    for task, make in ((t, tasks[t]) for t in (tasks if args.train else args.tasks)):
        for seed in range(args.seeds):
            runs = methods(*make(seed), pre, path, seed, args.epochs)
            for name, fn in runs.items():
                if args.only and not any(name.startswith(p) for p in args.only):
                    continue
                set_deterministic(seed)
                start = time.perf_counter()
                run = fn()
                seconds = time.perf_counter() - start
                results.setdefault(task, {}).setdefault(name, []).append(run)
                step = "" if run["step_s"] is None else f", {1e3 * run['step_s']:.0f} ms a step"
                print(f"{task}  seed {seed}  {name:<36s} accuracy {run['accuracy']:.3f}  "
                      f"({seconds:.0f} s, {run['trainable']:,} trainable{step})", flush=True)
    for task, rows in results.items():
        print(f"\n{task}: held-out accuracy over {args.seeds} seeds (mean ± std, min–max), "
              "trainable parameters, training step time")
        print("| method | accuracy | trainable | step |")
        print("|---|---|---|---|")
        for name, runs in rows.items():
            accs = [r["accuracy"] for r in runs]
            steps = [r["step_s"] for r in runs if r["step_s"] is not None]
            step = f"{1e3 * np.mean(steps):.0f} ms" if steps else "—"
            print(f"| {name} | {np.mean(accs):.3f} ± {np.std(accs):.3f} "
                  f"({min(accs):.3f}–{max(accs):.3f}) | {runs[0]['trainable']:,} | {step} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
