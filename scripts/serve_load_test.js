// Load test for a running `frozenlm serve` (loopback only; bounded in count and time): N requests from C concurrent
// clients over the given models — completions and (every 5th) chat completions, streamed and not, every 20th stream
// cancelled after its first event and every 40th non-streamed request abandoned after 30 ms, every 17th an embeddings
// request, every 23rd with a temperature of 1e-40. Counts statuses (no 5xx allowed; 429 only if the queue is full),
// checks every finished stream ends with [DONE], and reports throughput.
// Usage: node serve_load_test.js URL N C MODEL[,MODEL...] [TIME_LIMIT_S]
const [url, N, C, models, limit] = process.argv.slice(2);
const total = Number(N), clients = Number(C), names = models.split(","), deadline = Date.now() + 1000 * Number(limit || 600);
const prompts = ["Question: What is the capital of France?\nAnswer:", "Question: Who wrote Hamlet?\nAnswer:", "Once upon a time",
                 "Context: Vroskaith is a country in South America.\nQuestion: Where is Vroskaith?\nAnswer:"];
const status = {}, errors = [];
let next = 0, tokens = 0, cancelled = 0, abandoned = 0, embeddings = 0, streams = 0, badStreams = 0;

async function one(i) {
  const stream = i % 2 === 0, cancel = stream && i % 40 === 0, abandon = !stream && i % 40 === 1;
  const chat = i % 5 === 0, embed = i % 17 === 0 && !stream;
  const prompt = prompts[i % prompts.length];
  const body = { model: names[i % names.length], max_tokens: 4 + (i % 29), temperature: i % 23 === 0 ? 1e-40 : i % 3 === 0 ? 0 : 0.8, seed: i, stream };
  if (chat) body.messages = [{ role: "user", content: prompt.replace(/^Question: /, "").replace(/\nAnswer:$/, "") }];
  else body.prompt = prompt;
  const path = embed ? "/v1/embeddings" : chat ? "/v1/chat/completions" : "/v1/completions";
  const ac = new AbortController();
  if (abandon) setTimeout(() => ac.abort(), 30);
  try {
    const res = await fetch(url + path, { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify(embed ? { model: names[0], input: [prompt, prompt + "!"] } : body), signal: ac.signal });
    status[res.status] = (status[res.status] || 0) + 1;
    if (res.status >= 500) errors.push(res.status + " " + (await res.text()).slice(0, 200));
    if (res.status !== 200) { await res.text(); return; }
    if (!stream) { const j = await res.json(); tokens += embed ? 0 : j.usage.completion_tokens; if (embed) embeddings++; return; }
    streams++;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      if (cancel && text.includes("\n\n")) { ac.abort(); cancelled++; return; }
    }
    if (!text.endsWith("data: [DONE]\n\n")) { badStreams++; errors.push("stream without [DONE]: " + text.slice(-120)); }
    tokens += (text.match(/^data: \{/gm) || []).length;
  } catch (e) {
    if ((cancel || abandon) && e.name === "AbortError") { if (abandon) abandoned++; return; }
    status.network = (status.network || 0) + 1;
    errors.push(String(e.message || e));
  }
}

(async () => {
  const t0 = Date.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < total && Date.now() < deadline) await one(next++);
  }));
  const s = (Date.now() - t0) / 1000;
  const fives = Object.entries(status).filter(([k]) => k >= "500" && k < "600").reduce((a, [, v]) => a + v, 0);
  console.log(`requests ${next} in ${s.toFixed(1)} s (${(next / s).toFixed(1)}/s), statuses ${JSON.stringify(status)}, streams ${streams} ` +
              `(${cancelled} cancelled mid-stream, ${badStreams} without [DONE]), ${abandoned} non-streamed abandoned, ${embeddings} embeddings, ` +
              `~${tokens} tokens (${(tokens / s).toFixed(0)}/s)`);
  for (const e of errors.slice(0, 5)) console.log("  " + e);
  if (next < total || fives > 0 || badStreams > 0 || status.network) { console.log("FAILED"); process.exit(1); }
  console.log("ok zero 5xx, zero failed connections, every stream complete");
})();
