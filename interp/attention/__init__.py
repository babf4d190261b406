"""Attention analysis: scores, streamed statistics, the head taxonomy, maps and synthetic heads."""
