"""Model loading (hub id or local path) and the embedded offline defaults."""
