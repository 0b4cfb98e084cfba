"""What the status branch holds: its documents, how they are written and read, and the git store
underneath."""
