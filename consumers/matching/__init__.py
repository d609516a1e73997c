"""Cash application (SPEC §10), the pure core: payer names, invoice numbers, amounts, scores."""
