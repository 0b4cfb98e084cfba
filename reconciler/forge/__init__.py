"""Where changes are reviewed: starting a spec repository with its CI files, the plan as a pull
request comment, the outcome as a commit status."""
