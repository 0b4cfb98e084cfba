"""The daemon: its scheduler, its one HTTP server (webhooks, metrics, readiness, the page), and
the broadcasts it sends."""
