// Chats (whole and streamed) and generates with the official ollama package against mlxserve.
// Usage: node ollama_chat.mjs HOST MODEL; prints one JSON line with what it received.
import { Ollama } from "ollama";

const [host, model] = process.argv.slice(2);
const ollama = new Ollama({ host });
const options = { temperature: 0, num_predict: 3 };
const chat = { model, messages: [{ role: "user", content: "Say hello." }], options };
const generate = { model, prompt: "Count: 1, 2,", options };

// The figures every final Ollama message carries, whole or streamed.
function figures(final, text, chunks) {
  const { done, done_reason, eval_count, prompt_eval_count, eval_duration } = final;
  return { text, chunks, done, done_reason, eval_count, prompt_eval_count, eval_duration };
}

async function streamed(call, request, textOf) {
  let text = "";
  let chunks = 0;
  let last = null;
  let doneEarly = false;
  for await (const part of await call({ ...request, stream: true })) {
    doneEarly ||= Boolean(last?.done);
    text += textOf(part);
    chunks += 1;
    last = part;
  }
  return { ...figures(last, text, chunks), doneEarly };
}

const wholeChat = await ollama.chat(chat);
const wholeGenerate = await ollama.generate(generate);
const result = {
  chat: figures(wholeChat, wholeChat.message.content, 1),
  chatStream: await streamed((r) => ollama.chat(r), chat, (p) => p.message.content),
  generate: figures(wholeGenerate, wholeGenerate.response, 1),
  generateStream: await streamed((r) => ollama.generate(r), generate, (p) => p.response),
};
console.log(JSON.stringify(result));
