"""Model providers: the offline model, OpenAI-compatible endpoints, and the factory that
builds an AutoGen `ChatCompletionClient` from a model selection."""
