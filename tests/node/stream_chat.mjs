// Streams a chat reply from mlxserve with the official openai package, as the seed docs show.
// Usage: node stream_chat.mjs BASE_URL MODEL; prints one JSON line with what it received.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "lm-studio" });

const stream = await client.chat.completions.create({
  model,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Say hello." },
  ],
  temperature: 0,
  max_tokens: 5,
  stream: true,
  stream_options: { include_usage: true },
});

let text = "";
let chunks = 0;
let usage = null;
let finishReason = null;
for await (const chunk of stream) {
  chunks += 1;
  text += chunk.choices[0]?.delta?.content ?? "";
  finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
  usage = chunk.usage ?? usage;
}
const models = await client.models.list();
console.log(JSON.stringify({ text, chunks, usage, finishReason, models: models.data.map((m) => m.id) }));
