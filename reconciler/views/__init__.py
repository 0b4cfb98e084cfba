"""What people read: terminal output, the status report, the fleet page."""
