"""Business logic. Functions take an `AsyncSession` first and keyword arguments after; they flush
but never commit (the caller owns the transaction) and raise the domain errors of `errors.py`."""
