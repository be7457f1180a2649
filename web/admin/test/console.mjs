// Drives the built console in Debian's Chromium (headless, through playwright-core) against a
// running `guardyn serve`: a refused sign-in shows its gRPC code and reason, the admin signs
// in, suspends a user, verifies the audit chain and watches the live monitoring charts.
// Screenshots of each step go to $SCREENSHOTS. Exits non-zero naming the failed step.
//
// Environment: CONSOLE_URL, ADMIN_USER, ADMIN_PASSWORD, TARGET_USER, INSTANCE_ID, SCREENSHOTS,
// CHROMIUM (default /usr/bin/chromium).
import { mkdirSync } from "node:fs";
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

  step = "sign in";
  await page.fill("#password", password);
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
  await page.screenshot({ path: `${shots}/02-user-suspended.png`, fullPage: true });

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
  await page.screenshot({ path: `${shots}/03-audit-verified.png`, fullPage: true });

  step = "live monitoring";
  await page.click("#nav-monitoring");
  await page.waitForFunction(() => Number(document.querySelector("#chart-instances")?.dataset.points ?? 0) >= 3, null, {
    timeout: WAIT,
  });
  const drawn = await page.evaluate(() => {
    const c = document.querySelector("#chart-rss");
    const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let blue = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i + 2] > 150 && px[i] < 60 && px[i + 3] > 0) blue++;
    return { blue, points: Number(c.dataset.points) };
  });
  if (drawn.blue < 50 || drawn.points < 3) throw new Error(`the RSS chart drew ${JSON.stringify(drawn)}`);
  const ids = await page.locator("#instances .instance-id").allTextContents();
  if (!ids.includes(instance)) throw new Error(`instances shown: ${JSON.stringify(ids)}`);
  await page.screenshot({ path: `${shots}/04-monitoring-live.png`, fullPage: true });

  if (problems.length > 0) throw new Error(`the page logged errors: ${problems.join(" | ")}`);
  console.log(`CONSOLE OK refused=${refusedText} verdict=${verdict} chart=${JSON.stringify(drawn)} instances=${ids.join(",")}`);
} catch (err) {
  await page.screenshot({ path: `${shots}/failed.png`, fullPage: true }).catch(() => undefined);
  console.error(`console test failed at "${step}": ${err instanceof Error ? err.message : err}`);
  if (problems.length > 0) console.error(`page errors: ${problems.join(" | ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
