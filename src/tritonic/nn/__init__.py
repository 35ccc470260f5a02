"""``nn.Module`` drop-ins that subclass the torch modules they replace."""

from tritonic.nn.linear import Linear, LinearAct
from tritonic.nn.loss import CrossEntropyLoss, FusedLinearCrossEntropyLoss
from tritonic.nn.norm import LayerNorm, RMSNorm

__all__ = ["CrossEntropyLoss", "FusedLinearCrossEntropyLoss", "LayerNorm", "Linear", "LinearAct", "RMSNorm"]
