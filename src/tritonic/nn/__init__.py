"""``nn.Module`` drop-ins that subclass the torch modules they replace."""

from tritonic.nn.activation import GEGLU, GELU, SiLU, SwiGLU
from tritonic.nn.embedding import Embedding
from tritonic.nn.linear import Linear, LinearAct
from tritonic.nn.loss import CrossEntropyLoss, FusedLinearCrossEntropyLoss
from tritonic.nn.rope import RotaryEmbedding
from tritonic.nn.softmax import Softmax
from tritonic.nn.norm import LayerNorm, RMSNorm

__all__ = ["Softmax", "RotaryEmbedding", "GEGLU", "GELU", "SiLU", "SwiGLU", "CrossEntropyLoss", "Embedding", "FusedLinearCrossEntropyLoss", "LayerNorm", "Linear", "LinearAct", "RMSNorm"]
