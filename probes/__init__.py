"""Linear probes on cached activations, with control tasks (later issues)."""
