"""What the HTTP API speaks: OpenAI-compatible request and response bodies, λ from a request,
and the 4xx errors that name the field. No Ray: distributed/serve.py puts it on Ray Serve."""
