"""The gRPC surface: servicers (thin translation to and from the domain) and the call
pipeline around them."""
