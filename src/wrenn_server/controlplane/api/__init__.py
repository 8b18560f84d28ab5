"""The HTTP edge: dependencies, the error table, and the routes (thin: parse, open the
transaction, call one service function, convert the result)."""
