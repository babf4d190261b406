"""Circuit discovery (issue #24): the lead's engine lives in this package; known.py holds the
models whose circuits are known (tracr)."""
