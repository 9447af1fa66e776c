"""Task data: read and validate (readers, sources), tokenise (features), batch (collate, samplers)."""
