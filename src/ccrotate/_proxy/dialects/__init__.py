"""Client dialects: how an Anthropic or OpenAI client request enters the pipeline
and how the upstream answer leaves it."""
