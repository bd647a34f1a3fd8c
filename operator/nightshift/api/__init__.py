"""The API: models (the one source of truth for the CRDs), CRD generation, names, durations."""
