"""Domain code: the platform's rules, free of gRPC and generated code."""
