"""Wire schemas (request and response bodies), separate from the ORM models and split by area."""
