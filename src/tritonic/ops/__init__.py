"""The functional API: one module per op family.

Each op validates its arguments, allocates outputs, launches Triton kernels through a
registered torch custom op with autograd, and falls back to its PyTorch reference
(``*_reference``) where the kernels do not apply.
"""

from tritonic.ops.activation import (geglu, geglu_reference, gelu, gelu_reference, silu, silu_reference, swiglu,
                                     swiglu_reference)
from tritonic.ops.attention import attention, attention_reference, attention_varlen, attention_varlen_reference
from tritonic.ops.attention_decode import attention_decode, attention_decode_reference
from tritonic.ops.gated import gated_linear, gated_linear_reference, interleave_gate_up
from tritonic.ops.linear import linear, linear_reference
from tritonic.ops.matmul import matmul
from tritonic.ops.embedding import embedding, embedding_reference, embeddings_layer_norm, embeddings_layer_norm_reference
from tritonic.ops.loss import (cross_entropy, cross_entropy_reference, fused_linear_cross_entropy,
                              fused_linear_cross_entropy_reference)
from tritonic.ops.mlp import gated_mlp, gated_mlp_reference
from tritonic.ops.rope import rope, rope_reference
from tritonic.ops.softmax import log_softmax, log_softmax_reference, softmax, softmax_reference
from tritonic.ops.norm import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference

__all__ = ["log_softmax", "log_softmax_reference", "softmax", "softmax_reference", "rope", "rope_reference", "geglu", "geglu_reference", "gelu", "gelu_reference", "silu", "silu_reference", "swiglu",
           "swiglu_reference", "embedding", "embedding_reference", "embeddings_layer_norm",
           "embeddings_layer_norm_reference", "cross_entropy", "cross_entropy_reference", "fused_linear_cross_entropy",
           "fused_linear_cross_entropy_reference", "attention", "attention_decode", "attention_decode_reference", "attention_reference", "attention_varlen",
           "attention_varlen_reference", "gated_linear", "gated_linear_reference", "gated_mlp", "gated_mlp_reference", "interleave_gate_up", "layer_norm", "layer_norm_reference", "linear", "linear_reference", "matmul", "rms_norm",
           "rms_norm_reference"]
