"""Interventions: token ablation, activation and attribution patching, induction (issues #4, #5)."""
