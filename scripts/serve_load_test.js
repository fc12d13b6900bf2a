// Load test for a running `frozenlm serve` (loopback only; bounded in count and time): N requests from C concurrent
// clients over the given models, streamed and not, every 20th stream cancelled after its first event. Counts statuses
// (no 5xx allowed; 429 only if the queue is full), checks every finished stream ends with [DONE], and reports
// throughput. Usage: node serve_load_test.js URL N C MODEL[,MODEL...] [TIME_LIMIT_S]
const [url, N, C, models, limit] = process.argv.slice(2);
const total = Number(N), clients = Number(C), names = models.split(","), deadline = Date.now() + 1000 * Number(limit || 600);
const prompts = ["Question: What is the capital of France?\nAnswer:", "Question: Who wrote Hamlet?\nAnswer:", "Once upon a time",
                 "Context: Vroskaith is a country in South America.\nQuestion: Where is Vroskaith?\nAnswer:"];
const status = {}, errors = [];
let next = 0, tokens = 0, cancelled = 0, streams = 0, badStreams = 0;

async function one(i) {
  const stream = i % 2 === 0, cancel = stream && i % 40 === 0;
  const body = { model: names[i % names.length], prompt: prompts[i % prompts.length], max_tokens: 4 + (i % 29),
                 temperature: i % 3 === 0 ? 0 : 0.8, seed: i, stream };
  const ac = new AbortController();
  try {
    const res = await fetch(url + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
                                                      signal: ac.signal });
    status[res.status] = (status[res.status] || 0) + 1;
    if (res.status >= 500) errors.push(res.status + " " + (await res.text()).slice(0, 200));
    if (res.status !== 200) { await res.text(); return; }
    if (!stream) { tokens += (await res.json()).usage.completion_tokens; return; }
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
    if (cancel && e.name === "AbortError") return;
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
              `(${cancelled} cancelled mid-stream, ${badStreams} without [DONE]), ~${tokens} tokens (${(tokens / s).toFixed(0)}/s)`);
  for (const e of errors.slice(0, 5)) console.log("  " + e);
  if (next < total || fives > 0 || badStreams > 0 || status.network) { console.log("FAILED"); process.exit(1); }
  console.log("ok zero 5xx, zero failed connections, every stream complete");
})();
