"""Attention analysis: kinds and hook names (more to come with the head taxonomy, issue #3)."""

from interp.attention.kinds import KINDS, hook_name, kinds_of, model_family, n_layers

__all__ = ["KINDS", "hook_name", "kinds_of", "model_family", "n_layers"]
