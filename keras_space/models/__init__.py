"""keras_space.models: models and model builders (README: "Fine-tuning a pretrained Transformer", "P-tuning", "Exact large-batch contrastive training", "BERT-whitening ... sentence encoders")."""

from keras_space.models._lora import merge_lora
from keras_space.models.bert_checkpoint import BertCheckpoint, bert_from_checkpoint
from keras_space.models.grad_cache_model import GradCacheModel
from keras_space.models.p_tuning import (
    PTuningModel,
    apply_prompt_template,
    freeze_prompts,
    p_tuning_model,
)
from keras_space.models.p_tuning_causal_lm import PTuningCausalLM
from keras_space.models.sentence_encoder import encode_texts, sentence_encoder
from keras_space.models.serving import export_for_serving
