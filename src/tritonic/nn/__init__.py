"""``nn.Module`` drop-ins that subclass the torch modules they replace."""

from tritonic.nn.norm import LayerNorm, RMSNorm

__all__ = ["LayerNorm", "RMSNorm"]
