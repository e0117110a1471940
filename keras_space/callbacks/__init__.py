"""keras_space.callbacks: training callbacks (README: "BERT-whitening ... STS evaluation")."""

from keras_space.callbacks.similarity_evaluator import (
    SimilarityEvaluator,
    similarity_correlations,
)
