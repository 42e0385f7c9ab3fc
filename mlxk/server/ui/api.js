// The server's OpenAI API, as the page uses it: the chat models, and one streamed chat completion
// read from its server-sent events. URLs are relative to the page, so a reverse proxy may serve
// it under a path of its own.

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(key) {
  const found = { "content-type": "application/json" };
  if (key) found.authorization = `Bearer ${key}`;
  return found;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      message = body.error.message;
      code = body.error.code || null;
    }
  } catch {
    // not an OpenAI error object: the status line says enough
  }
  return new ApiError(response.status, message, code);
}

/** The models `/v1/models` lists that can chat, as {id, contextLength}. */
export async function chatModels(key) {
  const response = await fetch("v1/models", { headers: headers(key), cache: "no-store" });
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  return (body.data || [])
    .filter((model) => Array.isArray(model.capabilities) && model.capabilities.includes("chat"))
    .map((model) => ({ id: String(model.id), contextLength: model.context_length ?? null }));
}

/**
 * Streams one chat completion. `onDelta({content, reasoning})` gets each piece as it comes; the
 * result is {finishReason, usage}. Aborting `signal` closes the connection, and the server stops
 * the generation at its next step.
 */
export async function streamChat(request, { key, signal, onDelta }) {
  const response = await fetch("v1/chat/completions", {
    method: "POST",
    headers: headers(key),
    body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  let finishReason = null;
  let usage = null;
  for await (const data of events(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(500, chunk.error.message || "the generation failed", chunk.error.code);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      const content = typeof delta.content === "string" ? delta.content : "";
      const reasoning = typeof delta.reasoning_content === "string" ? delta.reasoning_content : "";
      if (content || reasoning) onDelta({ content, reasoning });
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return { finishReason, usage };
}

/** The `data` of each server-sent event of a byte stream, however the bytes are cut. */
export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}
