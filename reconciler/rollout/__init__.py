"""How the fleet moves: the plan (pure), the reconcile pass that executes it one step at a time,
and the gates that may hold it."""
