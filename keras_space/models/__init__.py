"""keras_space.models: models and model builders (see DESIGN.md)."""

from keras_space.models.sentence_encoder import encode_texts, sentence_encoder
