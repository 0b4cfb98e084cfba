"""One host: how commands reach it, what it is (facts, read-only), what can be done to it
(operations), and whether it is ready."""
