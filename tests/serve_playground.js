// The web playground in a real browser: headless Chromium (Debian's, driven by playwright-core) opens the page of a
// running `frozenlm serve`, enters the API key, runs one prompt through every model at once, and the rendered answers
// must be exactly what the API returns for each model; then the chat tab: a question and a follow-up, each model's
// answers exactly the API's chat answers for its own conversation (the server must have a chat template).
// Usage: node serve_playground.js PAGE_URL API_KEY SCREENSHOT   (the chat view goes beside it, as ...-chat.png)
const path = require("path");
const { chromium } = require(path.join(__dirname, "../tools/node_modules/playwright-core"));
const [url, apiKey, screenshot] = process.argv.slice(2);
const prompt = "Question: What is the capital of Germany?\nAnswer:";  // in the testbed's domain (docs/TESTBED.md)

function check(cond, what) {
  if (!cond) { console.error("FAILED: " + what); process.exit(1); }
  console.log("ok " + what);
}

(async () => {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(url);
    await page.fill("#api_key", apiKey);
    await page.dispatchEvent("#api_key", "change");
    await page.waitForSelector("#models input[type=checkbox]");
    const models = await page.$$eval("#models input[type=checkbox]", (xs) => xs.map((x) => x.value));
    check(models.length >= 3, "the page lists the base and the modules: " + models.join(", "));
    await page.fill("#prompt", prompt);
    await page.fill("#max_tokens", "12");
    await page.fill("#temperature", "0");
    await page.click("#run");
    await page.waitForSelector("body[data-finished='1']", { timeout: 120000 });
    const cards = await page.$$eval(".card", (cs) => cs.map((c) => ({ model: c.dataset.model, answer: c.querySelector(".answer").textContent,
                                                                         state: c.querySelector(".state").textContent, stats: c.querySelector(".stats").textContent })));
    check(cards.length === models.length && cards.every((c) => c.state === "done"), "one finished card per model");
    for (const c of cards) {
      const res = await fetch(new URL("/v1/completions", url), {
        method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + apiKey },
        body: JSON.stringify({ model: c.model, prompt, max_tokens: 12, temperature: 0 }),
      });
      const want = (await res.json()).choices[0].text;
      check(c.answer === want, c.model + " renders exactly the API's answer: " + JSON.stringify(c.answer) + " (" + c.stats + ")");
    }
    check(errors.length === 0, "no errors in the page: " + errors.join("; "));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log("ok screenshot " + screenshot);

    // The chat tab: two turns; each card's conversation goes on from its own answer.
    await page.click(".modes label:nth-child(2)");  // the chat tab
    check(await page.isChecked("input[name=mode][value=chat]"), "the chat tab is on");
    const turns = ["What is the capital of Germany?", "What is the capital of Japan?"];
    const history = {};
    for (let t = 0; t < turns.length; ++t) {
      await page.fill("#prompt", turns[t]);
      await page.click("#run");
      await page.waitForSelector(`body[data-finished='${t + 2}']`, { timeout: 120000 });
      const chats = await page.$$eval(".card", (cs) => cs.map((c) => ({ model: c.dataset.model, answer: c.querySelector(".answer").textContent,
                                                                          state: c.querySelector(".state").textContent,
                                                                          turns: c.querySelectorAll(".turn").length })));
      for (const c of chats) {
        const messages = [...(history[c.model] || []), { role: "user", content: turns[t] }];
        const res = await fetch(new URL("/v1/chat/completions", url), {
          method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + apiKey },
          body: JSON.stringify({ model: c.model, messages, max_tokens: 12, temperature: 0 }),
        });
        const want = (await res.json()).choices[0].message.content;
        check(c.state === "done" && c.answer === want && c.turns === messages.length,
              "chat turn " + (t + 1) + ": " + c.model + " renders the API's chat answer for its conversation: " + JSON.stringify(c.answer));
        history[c.model] = [...messages, { role: "assistant", content: want }];
      }
    }
    check(errors.length === 0, "no errors in the page after chatting: " + errors.join("; "));
    const chatShot = screenshot.replace(/\.png$/, "-chat.png");
    await page.screenshot({ path: chatShot, fullPage: true });
    console.log("ok screenshot " + chatShot);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error("FAILED: " + (e.stack || e)); process.exit(1); });
