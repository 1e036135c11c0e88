"""OCI images: references, registries, local sources, a content-addressed store, hardened layer apply."""
