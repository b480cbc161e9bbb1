"""Remote sessions: a technician's time on one device, with the owner's consent (docs/sessions.md)."""
