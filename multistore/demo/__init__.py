"""The offline demo: deterministic sample sources and the local servers that serve them."""
