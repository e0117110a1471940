"""keras_space.callbacks: training callbacks (see DESIGN.md)."""

from keras_space.callbacks.similarity_evaluator import SimilarityEvaluator
