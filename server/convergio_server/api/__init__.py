"""The gRPC surface: servicers (thin translation to and from the domain) and interceptors."""
