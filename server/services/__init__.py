"""Domain services. Functions here commit; the helpers they call join the caller's transaction."""
