"""Review: payments cash application could not apply on its own, waiting for a person (SPEC §10)."""
