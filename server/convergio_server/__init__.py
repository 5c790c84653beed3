"""The Convergio server."""

import os

# The server forks only to run the embedded stores' programs; gRPC's fork handlers would
# write a raw line to stderr on shutdown (breaking one JSON object per line in the logs).
# Set before gRPC is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
