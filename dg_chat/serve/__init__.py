"""`dg-chat serve`: dg-chat's engine as an OpenAI-compatible HTTP server, and the wire protocol
that it sends and dg-chat's remote backend (`openai:<url>#<model>`) reads (issue 15).

The protocol
------------
Plain OpenAI chat completions (`POST /v1/chat/completions`, `GET /v1/models`), as vLLM serves
DiffusionGemma: with `"stream": true`, Server-Sent Events whose `data:` lines are
`chat.completion.chunk` JSON objects and a final `data: [DONE]`. vLLM emits one chunk per committed
canvas (block): `choices[0].delta.content` holds that block's answer text and
`choices[0].delta.reasoning_content` its thinking text (vLLM's reasoning field); the last chunk has
`finish_reason` ("stop" or "length") and, when the request has `"stream_options": {"include_usage": true}`,
a `usage` object (`prompt_tokens`, `completion_tokens`).

dg-chat's opt-in extension (the request body carries `"dg_chat": {"canvas": true}`; a server
that does not know it ignores the unknown field, so the client falls back to per-block display; a
strict one such as OpenAI's answers 400 naming the field, and the client sends the request again
without `dg_chat` and `chat_template_kwargs`, and no later request carries them):
each denoising step is sent as its own SSE event **before** the block's normal chunk:

    event: dg_chat.canvas
    data: {"block": 0, "step": 3, "max_steps": 48, "pieces": ["The", " canvas", ...],
           "end": [false, false, ...], "accepted": [true, false, ...], "changed": [false, true, ...],
           "mean_entropy": 1.23}

`pieces` are the decoded text pieces of the step's argmax canvas, one per canvas position (what the
local TUI shows), `end` marks the positions that hold an end-of-turn token (shown as quiet cells,
as locally; a client reads a missing `end` as none), `accepted`/`changed` as in
`dg_chat.engine.events.CanvasStep`. Events without an
`event:` line are the standard chunks. The request may also carry `"seed"` (OpenAI's field), `"max_tokens"`,
and `"dg_chat": {"canvas": true, "sampler": {...SamplerSettings fields...}, "thinking": bool}`.
Each block's normal chunk additionally carries `"dg_chat": {"block": b, "steps": n}` (ignored by
other clients). Non-streaming responses are a standard `chat.completion` with `usage`.

Errors follow OpenAI's shape: HTTP status + `{"error": {"message": "...", "type": "...", "code": ...}}`.

How `dg-chat serve` fills it in
-------------------------------
- Models: `/v1/models` lists the one loaded model; its id is the `-m` catalog name (demo,
  diffusiongemma:Q4_K_M) or the GGUF file's name without `.gguf`. A request naming another model
  gets 404; one naming none is answered by the loaded model.
- Messages: roles system (and OpenAI's developer), user and assistant; content is a string or a
  list of text parts. The last message must be the user's.
- Sampling: the server's settings (config file, `dg-chat serve` flags) are the defaults; the
  request's `dg_chat.sampler` fields override them (checked like the config file's), then `seed`,
  `max_tokens` (or `max_completion_tokens`) and `dg_chat.thinking`. `max_tokens` counts whole
  canvases: ceil(max_tokens / canvas_length) of them at most. OpenAI's `temperature`, `top_p`, `stop`
  and other fields are ignored (the sampler has its own schedule); `n` must be 1.
- Reproducible: every request is answered from an empty context (its whole prompt is encoded),
  so the same request with the same seed gets the same answer whatever was asked before, the
  answer `dg-chat ask --seed N` gives for it.
- finish_reason: "stop" when the answer ends with an end-of-turn token, "length" when it ran out
  of canvases. `usage.completion_tokens` counts the kept tokens, end token included.
- One engine, one turn at a time: requests queue in arrival order, at most `worker.MAX_WAITING`
  (32) behind the running one. A request's prompt is checked when the engine takes it (the
  engine's thread alone uses its tokenizer), so its response starts then. A client that goes away
  stops its turn at the next denoising step (or before it starts, if still queued).
- Errors: 400 `invalid_request_error` (not JSON, a bad field, a prompt longer than the context),
  401 `authentication_error` (the bearer token, when the server has one), 404 (an unknown model
  or path), 405, 429 `rate_limit_error` (the queue is full: "the server is busy: N requests are
  waiting"), 500 `server_error` (the engine failed), 503 (the server stopped the turn: it is
  shutting down). `code` is the HTTP status. In a stream that has begun, an error is one
  `data: {"error": {...}}` event followed by `data: [DONE]`, without a `finish_reason` chunk.

Modules: `protocol` (requests in, JSON out), `worker` (the engine's thread and queue), `app` (the
Starlette routes), `server` (the socket and uvicorn).
"""
