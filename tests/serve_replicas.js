// Load through a load balancer while a replica dies: W workers send N completions (half streamed) to URL; after
// KILL_AFTER requests have finished, the PID in KILL_PID gets SIGKILL. Every failed request must have been in flight at
// that moment (started before, not finished): nothing that started after the kill may fail.
// Usage: node serve_replicas.js URL N W KILL_AFTER KILL_PID MODEL_A MODEL_B
const [url, N, W, killAfter, killPid, modelA, modelB] = process.argv.slice(2);
const total = Number(N), workers = Number(W);
let next = 0, finished = 0, killedAt = null;
const results = [];

async function one(i) {
  const body = { model: i % 2 ? modelA : modelB, prompt: "Question: What is the capital of France?\nAnswer:", max_tokens: 8 + (i % 5),
                 temperature: 0, stream: i % 2 === 0 };
  const start = Date.now();
  try {
    const res = await fetch(url + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const text = await res.text();
    if (res.status !== 200) throw new Error("HTTP " + res.status + ": " + text.slice(0, 200));
    if (body.stream && !text.endsWith("data: [DONE]\n\n")) throw new Error("stream cut short");
    results.push({ i, start, end: Date.now(), ok: true });
  } catch (e) {
    results.push({ i, start, end: Date.now(), ok: false, error: String(e.message || e) });
  }
  if (++finished === Number(killAfter) && killPid !== "0") {
    killedAt = Date.now();
    process.kill(Number(killPid), "SIGKILL");
  }
}

(async () => {
  await Promise.all(Array.from({ length: workers }, async () => {
    while (next < total) await one(next++);
  }));
  const failed = results.filter((r) => !r.ok);
  const badFailures = failed.filter((r) => killedAt === null || r.start > killedAt || r.end < killedAt);
  const after = results.filter((r) => killedAt !== null && r.start > killedAt);
  console.log(`requests ${results.length}, ok ${results.length - failed.length}, failed ${failed.length} (in flight at the kill: ${failed.length - badFailures.length}), started after the kill ${after.length} (all ok: ${after.every((r) => r.ok)})`);
  for (const f of failed.slice(0, 5)) console.log("  failed #" + f.i + ": " + f.error);
  if (results.length !== total || badFailures.length > 0 || after.length === 0) { console.error("FAILED"); process.exit(1); }
  console.log("ok no failed request that was not in flight");
})();
