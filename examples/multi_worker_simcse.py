"""Unsupervised SimCSE on the pretrained MiniLM, trained by several worker processes.

On this machine, N local workers (127.0.0.1, free ports):

    python examples/multi_worker_simcse.py --workers 2 [--steps 4] [--accumulate 1]

On N machines: set `TF_CONFIG` on each (the same cluster, its own index), e.g.
`{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}`,
and run the same command without `--workers` on every machine.

Each worker runs the same code: `tf.distribute.MultiWorkerMirroredStrategy` with
`keras_space.utils.enable_multi_worker_fit()`, a `GradCacheModel` whose InfoNCE loss
sees the whole global batch (every worker's sentences) as negatives, and
`keras.callbacks.BackupAndRestore`, so a job whose worker dies resumes from its last
backup when restarted with the same command. The effective batch is
workers x replicas per worker x micro-batches per step (all in `--batch-size`, the
global batch) x `--accumulate` steps. Worker 0 then scores STS 2016 (Spearman x 100 of
cosine similarity) before and after.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_STS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sts")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=0,
                        help="start this many local workers (without it: be one worker of TF_CONFIG's cluster)")
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch (all workers)")
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--accumulate", type=int, default=1, help="GradientAccumulator steps (1: none)")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--backup-dir", default=os.path.join(tempfile.gettempdir(), "multi_worker_simcse"))
    parser.add_argument("--no-eval", action="store_true", help="skip the STS 2016 scores")
    parser.add_argument("--timeout", type=float, default=3600, help="launcher: seconds before the workers are ended")
    return parser.parse_args(argv)


def launch(args, argv):
    """Start `args.workers` local workers running this script, wait, print their results."""
    from keras_space.testing import run_workers

    path = os.path.abspath(__file__)
    worker_argv = [path, *argv, "--workers", "0"]  # the last --workers wins: each runs as one worker
    code = f"import runpy, sys\nsys.argv = {worker_argv!r}\nrunpy.run_path({path!r}, run_name='__main__')\n"
    for index, fields in enumerate(run_workers(code, num_workers=args.workers, timeout=args.timeout)):
        print(f"worker {index}:", " ".join(fields))


def train(args):
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from keras_space.datasets import load_sts
    from keras_space.losses import InfoNCE
    from keras_space.models import GradCacheModel, sentence_encoder
    from keras_space.optimizers import GradientAccumulator
    from keras_space.utils import enable_multi_worker_fit, minilm_path

    enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = strategy.cluster_resolver.task_id or 0
    keras.utils.set_random_seed(0)  # the same on every worker

    # The same sentences on every worker, in the same order: fit splits each global
    # batch of numpy rows across the workers (tf.distribute's data sharding).
    data = load_sts(args.sts_dir)
    train = sorted({s for name, (s1, s2, _) in data.items() if not name.startswith("2016") for s in (*s1, *s2)})
    order = np.random.default_rng(0).permutation(len(train))[: args.steps * args.batch_size]
    path = minilm_path()
    preprocess = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        path, sequence_length=args.sequence_length)
    features = {k: np.asarray(v) for k, v in preprocess([train[i] for i in order]).items()}

    with strategy.scope():
        encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), "mean")
        model = GradCacheModel(encoder, micro_batch_size=args.micro_batch_size)  # dropout: the positives
        optimizer = keras.optimizers.Adam(args.learning_rate)
        if args.accumulate > 1:
            optimizer = GradientAccumulator(optimizer, args.accumulate)
        model.compile(optimizer, loss=InfoNCE(temperature=0.05))
    backup = keras.callbacks.BackupAndRestore(os.path.join(args.backup_dir, f"worker{task}"), save_freq=1)
    history = model.fit((features, features), batch_size=args.batch_size, epochs=1, shuffle=False,
                        verbose=2 if task == 0 else 0, callbacks=[backup])
    result = [f"loss={history.history['loss'][-1]:.4f}", f"accuracy={history.history['accuracy'][-1]:.3f}",
              f"steps={int(model.optimizer.iterations.numpy())}"]
    if task == 0 and not args.no_eval:
        result += evaluate(data, path, encoder.get_weights())
    print("RESULT", *result, flush=True)


def evaluate(data, path, trained_weights):
    """STS 2016 Spearman x 100, in this process alone (outside the strategy): the
    pretrained MiniLM, then the trained weights."""
    import keras_hub
    import numpy as np

    from keras_space.callbacks import SimilarityEvaluator
    from keras_space.models import sentence_encoder

    pairs = [d for name, d in data.items() if name.startswith("2016")]
    texts = ([s for d in pairs for s in d[0]], [s for d in pairs for s in d[1]])
    gold = np.concatenate([d[2] for d in pairs])
    preprocess = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=128)
    encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), "mean")
    evaluator = SimilarityEvaluator(texts, gold, encoder, name="sts16", preprocessor=preprocess)
    before = evaluator.evaluate()["sts16_spearman"]
    encoder.set_weights(trained_weights)
    after = evaluator.evaluate()["sts16_spearman"]
    return [f"sts16_before={100 * before:.2f}", f"sts16_after={100 * after:.2f}"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.workers:
        launch(args, argv)
    else:
        train(args)


if __name__ == "__main__":
    main()
