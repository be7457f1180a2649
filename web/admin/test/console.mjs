// Drives the built console in Debian's Chromium (headless, through playwright-core) against a
// running `guardyn serve`: a refused sign-in shows its gRPC code and reason, the admin signs
// in with password and TOTP (a wrong code is refused on screen first), suspends a user,
// verifies the audit chain and watches the live monitoring charts, the message rate rising
// while messages are sent. Screenshots of each step go to $SCREENSHOTS. Exits non-zero naming
// the failed step.
//
// The harness (crates/guardyn/tests/e2e/console.rs) holds the TOTP secret and the message
// senders: this script asks it on stdout with a line `NEED <what>` and, for codes, reads the
// answer as one line on stdin (`totp`: the current code; `totp-wrong`: a code that is not
// valid now); `messages` starts the senders and has no answer.
//
// Environment: CONSOLE_URL, ADMIN_USER, ADMIN_PASSWORD, TARGET_USER, INSTANCE_ID, SCREENSHOTS,
// CHROMIUM (default /usr/bin/chromium).
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") throw new Error(`${name} is not set`);
  return v;
};
const url = env("CONSOLE_URL");
const admin = env("ADMIN_USER");
const password = env("ADMIN_PASSWORD");
const target = env("TARGET_USER");
const instance = env("INSTANCE_ID");
const shots = env("SCREENSHOTS");
mkdirSync(shots, { recursive: true });
const WAIT = 60_000;

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Ask the harness for `what`; with `reply`, wait for its one-line answer. */
const need = async (what, reply = true) => {
  console.log(`NEED ${what}`);
  if (!reply) return "";
  const next = await answers.next();
  if (next.done) throw new Error(`the harness closed stdin instead of answering ${what}`);
  return next.value.trim();
};

/** Pixels of the chart's line colour, in all and in its top quarter (the highest samples). */
const bluePixels = (selector) =>
  page.evaluate((sel) => {
    const c = document.querySelector(sel);
    const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let blue = 0;
    let top = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 2] > 150 && px[i] < 60 && px[i + 3] > 0) {
        blue++;
        if (i / 4 / c.width < c.height / 4) top++;
      }
    }
    return { blue, top, points: Number(c.dataset.points), max: Number(c.dataset.max) };
  }, selector);

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let step = "open";
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
page.on("console", (m) => {
  if (m.type() === "error") problems.push(m.text());
});
page.on("pageerror", (e) => problems.push(String(e)));
try {
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#login-form", { timeout: WAIT });

  step = "refused sign-in shows the code";
  await page.fill("#username", admin);
  await page.fill("#password", `${password} but wrong`);
  await page.click("#sign-in");
  const refused = page.locator("#login-form .error-code");
  await refused.waitFor({ timeout: WAIT });
  const refusedText = await refused.textContent();
  if (!/^UNAUTHENTICATED \/ [A-Z_]+$/.test(refusedText ?? "")) {
    throw new Error(`the refusal reads ${JSON.stringify(refusedText)}`);
  }
  await page.screenshot({ path: `${shots}/01-sign-in-refused.png` });

  step = "the password asks for the TOTP code";
  await page.fill("#password", password);
  await page.click("#sign-in");
  await page.waitForSelector("#totp", { state: "visible", timeout: WAIT });

  step = "a wrong TOTP code is refused on screen";
  await page.fill("#totp", await need("totp-wrong"));
  await page.click("#sign-in");
  await page.waitForFunction(
    () => document.querySelector("#login-form .error-code")?.textContent === "UNAUTHENTICATED / INVALID_CODE",
    null,
    { timeout: WAIT },
  );
  if (!(await page.isVisible("#totp"))) throw new Error("the TOTP step was left after a wrong code");
  await page.screenshot({ path: `${shots}/02-totp-refused.png` });

  step = "sign in with the TOTP code";
  await page.fill("#totp", await need("totp"));
  await page.click("#sign-in");
  await page.waitForSelector("#users-page", { timeout: WAIT });

  step = "search and suspend";
  await page.fill("#user-search", target);
  await page.fill("#reason", "suspended from the browser test");
  await page.click("#users-page form button[type=submit]");
  const suspend = page.locator(`button[data-action=suspend][data-user="${target}"]`);
  await suspend.waitFor({ timeout: WAIT });
  await suspend.click();
  await page.waitForFunction(
    (u) => document.querySelector(`[data-state="${u}"]`)?.textContent === "suspended",
    target,
    { timeout: WAIT },
  );
  const status = await page.textContent("#users-status");
  if (!status?.includes(`${target} suspended`)) throw new Error(`status reads ${JSON.stringify(status)}`);
  await page.screenshot({ path: `${shots}/03-user-suspended.png`, fullPage: true });

  step = "verify the audit chain";
  await page.click("#nav-audit");
  await page.waitForSelector("#audit-list table", { timeout: WAIT });
  const suspendedEntry = page.locator("#audit-list td", { hasText: "suspended from the browser test" });
  await suspendedEntry.first().waitFor({ timeout: WAIT });
  await page.click("#verify-chain");
  await page.waitForFunction(() => /^(OK|BROKEN)/.test(document.querySelector("#verify-result")?.textContent ?? ""), null, {
    timeout: WAIT,
  });
  const verdict = await page.textContent("#verify-result");
  if (!verdict?.startsWith("OK: ")) throw new Error(`verification reads ${JSON.stringify(verdict)}`);
  await page.screenshot({ path: `${shots}/04-audit-verified.png`, fullPage: true });

  step = "live monitoring";
  await page.click("#nav-monitoring");
  await page.waitForFunction(() => Number(document.querySelector("#chart-instances")?.dataset.points ?? 0) >= 3, null, {
    timeout: WAIT,
  });
  const drawn = await bluePixels("#chart-rss");
  if (drawn.blue < 50 || drawn.points < 3) throw new Error(`the RSS chart drew ${JSON.stringify(drawn)}`);
  const ids = await page.locator("#instances .instance-id").allTextContents();
  if (!ids.includes(instance)) throw new Error(`instances shown: ${JSON.stringify(ids)}`);

  step = "the message rate rises while messages are sent";
  // Nothing was sent while the page watched: the series starts flat at 0.
  const before = await bluePixels("#chart-messages");
  if (before.max !== 0) throw new Error(`messages charted before any was sent: ${JSON.stringify(before)}`);
  await need("messages", false);
  await page.waitForFunction(() => Number(document.querySelector("#chart-messages")?.dataset.max ?? 0) > 0, null, {
    timeout: 90_000,
  });
  // A few more samples, so the rise is drawn with what follows it.
  const points = Number(await page.getAttribute("#chart-messages", "data-points"));
  await page.waitForFunction((n) => Number(document.querySelector("#chart-messages")?.dataset.points ?? 0) >= n + 2, points, {
    timeout: WAIT,
  });
  const messages = await bluePixels("#chart-messages");
  // The highest sample is drawn at the top of the canvas, the zeros at its bottom.
  if (messages.blue < 50 || messages.top < 5) throw new Error(`the message-rate chart drew ${JSON.stringify(messages)}`);
  const rateRow = await page.locator("#instances tbody tr").first().textContent();
  await page.screenshot({ path: `${shots}/05-monitoring-live.png`, fullPage: true });

  if (problems.length > 0) throw new Error(`the page logged errors: ${problems.join(" | ")}`);
  console.log(
    `CONSOLE OK refused=${refusedText} verdict=${verdict} chart=${JSON.stringify(drawn)} messages=${JSON.stringify(messages)} instances=${ids.join(",")} row=${JSON.stringify(rateRow)}`,
  );
} catch (err) {
  await page.screenshot({ path: `${shots}/failed.png`, fullPage: true }).catch(() => undefined);
  console.error(`console test failed at "${step}": ${err instanceof Error ? err.message : err}`);
  if (problems.length > 0) console.error(`page errors: ${problems.join(" | ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
