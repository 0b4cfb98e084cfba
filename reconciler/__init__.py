"""openclaw-reconciler: a GitOps reconciler for fleets of OpenClaw gateways.

The public surface is the CLI (`reconciler`) and the documents in schemas/. Modules are
named for their one responsibility; everything else is private to the package.
"""

__version__ = "0.1.0"
