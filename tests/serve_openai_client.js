// The official OpenAI Node client (npm `openai`) against a running `frozenlm serve`: list models, a completion, a
// streamed completion, the errors it raises. Usage: node serve_openai_client.js BASE_URL API_KEY MODULE PROMPT EXPECTED
// (EXPECTED: what `frozenlm generate` printed for the same module, prompt and greedy decoding). Prints "ok" lines.
const path = require("path");
const { OpenAI } = require(path.join(__dirname, "../tools/node_modules/openai"));
const [baseURL, apiKey, moduleName, prompt, expected] = process.argv.slice(2);

function check(cond, what) {
  if (!cond) { console.error("FAILED: " + what); process.exit(1); }
  console.log("ok " + what);
}

(async () => {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  check(models.some((m) => m.id === moduleName && m.kind === "prompt_tuning") && models.some((m) => m.kind === "base"),
        "models.list has the base and " + moduleName + ": " + models.map((m) => m.id + "(" + m.kind + ")").join(" "));

  const one = await client.models.retrieve(moduleName);
  check(one.id === moduleName && one.kind === "prompt_tuning" && one.parameters > 0, "models.retrieve(" + moduleName + ")");

  const r = await client.completions.create({ model: moduleName, prompt, max_tokens: 12, temperature: 0, stop: ["\n"] });
  check(r.object === "text_completion" && r.choices.length === 1, "completions.create answers a text_completion");
  check(r.choices[0].text === expected, "non-streamed text equals frozenlm generate: " + JSON.stringify(r.choices[0].text));
  check(r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "usage adds up");

  const stream = await client.completions.create({ model: moduleName, prompt, max_tokens: 12, temperature: 0, stop: ["\n"], stream: true,
                                                   stream_options: { include_usage: true } });
  let text = "", usage = null, finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) { text += c.text; if (c.finish_reason) finish = c.finish_reason; }
    if (chunk.usage) usage = chunk.usage;
  }
  check(text === expected, "streamed text equals it too");
  check(finish === r.choices[0].finish_reason && usage && usage.completion_tokens === r.usage.completion_tokens, "stream's finish_reason and usage");

  // Chat: the server's chat template (tests/data/qa_chat_template.jinja) turns the user turn into the same prompt.
  const question = prompt.replace(/^Question: /, "").replace(/\nAnswer:$/, "");
  const chat = await client.chat.completions.create({ model: moduleName, messages: [{ role: "user", content: question }], max_tokens: 12,
                                                      temperature: 0, stop: ["\n"] });
  check(chat.object === "chat.completion" && chat.choices[0].message.role === "assistant", "chat.completions.create answers a chat.completion");
  check(chat.choices[0].message.content === expected, "chat content equals frozenlm generate on the rendered prompt: " + JSON.stringify(chat.choices[0].message.content));
  check(chat.usage.prompt_tokens === r.usage.prompt_tokens, "chat's prompt is the completion's prompt, token for token");
  const chatStream = await client.chat.completions.create({ model: moduleName, messages: [{ role: "user", content: question }], max_tokens: 12,
                                                            temperature: 0, stop: ["\n"], stream: true, stream_options: { include_usage: true } });
  let chatText = "", role = null, chatUsage = null;
  for await (const chunk of chatStream) {
    for (const c of chunk.choices) { if (c.delta.role) role = c.delta.role; if (c.delta.content) chatText += c.delta.content; }
    if (chunk.usage) chatUsage = chunk.usage;
  }
  check(role === "assistant" && chatText === expected && chatUsage && chatUsage.completion_tokens === chat.usage.completion_tokens,
        "streamed chat: the role, then deltas that add up to the same content, then usage");
  const lp = await client.chat.completions.create({ model: moduleName, messages: [{ role: "user", content: question }], max_tokens: 4,
                                                    temperature: 0, logprobs: true, top_logprobs: 2 });
  check(lp.choices[0].logprobs.content.length === lp.usage.completion_tokens && lp.choices[0].logprobs.content[0].top_logprobs.length === 2,
        "chat logprobs: one entry per token, with top_logprobs");

  // Embeddings (the npm client asks for base64 and decodes it): the frozen LM's pooled, L2-normalised vectors.
  const emb = await client.embeddings.create({ model: models.find((m) => m.kind === "base").id, input: [question, "Berlin"] });
  const norms = emb.data.map((d) => Math.sqrt(d.embedding.reduce((s, x) => s + x * x, 0)));
  check(emb.data.length === 2 && emb.data[0].embedding.length > 0 && norms.every((n) => Math.abs(n - 1) < 1e-4) && emb.usage.prompt_tokens > 0,
        "embeddings.create: " + emb.data.length + " vectors of " + emb.data[0].embedding.length + ", unit length");

  const many = await client.completions.create({ model: moduleName, prompt: [prompt, prompt], n: 2, max_tokens: 6, temperature: 1, seed: 3 });
  check(many.choices.length === 4 && many.choices.map((c) => c.index).join() === "0,1,2,3", "a prompt list with n=2 gives 4 indexed choices");

  try {
    await client.completions.create({ model: "no-such-module", prompt: "x" });
    check(false, "an unknown model raises");
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found", "an unknown model raises NotFoundError (model_not_found)");
  }
  try {
    await client.completions.create({ model: moduleName, prompt: "x", max_tokens: -1 });
    check(false, "a negative max_tokens raises");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.param === "max_tokens", "a negative max_tokens raises BadRequestError naming max_tokens");
  }
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + "x", maxRetries: 0 });
  try {
    await wrong.completions.create({ model: moduleName, prompt: "x" });
    check(false, "a wrong API key raises");
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError && e.status === 401, "a wrong API key raises AuthenticationError");
  }
})().catch((e) => { console.error("FAILED: " + (e.stack || e)); process.exit(1); });
