"""A model served over HTTP by an OpenAI-compatible server (vLLM, a hosted endpoint, `dg-chat serve`).

`spec.py` reads the model spec `openai:<base-url>#<model>`, `client.py` speaks HTTP (one-line
errors, a stream that a stop closes at once), `engine.py` turns the streamed chunks into the
events of a turn. Wire format: OpenAI chat completions plus dg-chat's `dg_chat.canvas` events.
"""
