"""The knowledge base (docs/knowledge.md): KCS articles captured when incidents are resolved,
ranked suggestions for open incidents, search, and customer-safe articles as guides."""
