"""keras_space.layers: the public layers (README: one section per component under "Components")."""

from keras_space.layers.external_attention import ExternalAttention
from keras_space.layers.fnet_block import FNetBlock
from keras_space.layers.gmlp_block import GMLPBlock
from keras_space.layers.masked_mean_pooling import MaskedMeanPooling
from keras_space.layers.mlp_mixer_block import MLPMixerBlock
from keras_space.layers.power_spherical import PowerSpherical
from keras_space.layers.prompt_encoder import PromptEncoder
from keras_space.layers.random_projection import RandomProjection
from keras_space.layers.res_mlp_block import ResMLPBlock
from keras_space.layers.sim_hash import SimHash
from keras_space.layers.smooth_abs import SmoothAbs
from keras_space.layers.smooth_activation import SmoothActivation
from keras_space.layers.smooth_leaky_relu import SmoothLeakyReLU
from keras_space.layers.smooth_max import SmoothMax
from keras_space.layers.smooth_relu import SmoothReLU
from keras_space.layers.smooth_sign import SmoothSign
from keras_space.layers.synthesizer_attention import SynthesizerAttention
from keras_space.layers.von_mises_fisher import VonMisesFisher
from keras_space.layers.whitening_layer import WhiteningLayer
