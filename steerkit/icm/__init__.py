"""The ICM coherence search (to be implemented: see issue 2)."""
