// Drives the viewer page in headless Chromium (Debian's /usr/bin/chromium):
// node viewer_check.mjs URL SOURCE_RATE_HZ SCREENSHOT UNGRANTED_FILTER
// Prints one JSON line of what it measured; exits non-zero on a failed check.
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, rateArg, screenshot, ungranted] = process.argv.slice(2);
const sourceRate = Number(rateArg);
const userDataDir = mkdtempSync(join(tmpdir(), "lclstream-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const fail = async (why) => { console.error("viewer check failed: " + why); await context.close(); process.exit(1); };
try {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => Number(document.body.dataset.frameSeq || 0) > 0, null, { timeout: 20000 });
  const image = page.locator("#image");
  const first = await image.screenshot();
  await page.waitForTimeout(1500);
  const second = await image.screenshot();
  if (Buffer.compare(first, second) === 0) await fail("the image did not change in 1.5 s");
  // The rate window is 5 s: wait until it is full.
  await page.waitForTimeout(5000);
  const rate = Number(await page.locator("#rate").textContent());
  if (!(Math.abs(rate - sourceRate) <= 0.3 * sourceRate)) await fail(`reported rate ${rate} Hz, source ${sourceRate} Hz`);
  const trendPoints = Number(await page.locator("#trend-n").textContent());
  if (trendPoints < 10) await fail(`only ${trendPoints} trend points`);
  writeFileSync(screenshot, await page.screenshot({ fullPage: true }));
  // A filter the institution has no grant for: an error, and no frame.
  await page.fill("#source", ungranted);
  await page.click("#apply");
  await page.waitForFunction(() => document.getElementById("error").textContent.length > 0, null, { timeout: 20000 });
  const error = await page.locator("#error").textContent();
  await page.waitForTimeout(1000);
  const seqAfter = Number(await page.evaluate(() => document.body.dataset.frameSeq));
  const events = await page.locator("#events").textContent();
  if (seqAfter !== 0 || events !== "0") await fail(`data shown for an ungranted filter: frame ${seqAfter}, events ${events}`);
  console.log(JSON.stringify({ rate, trendPoints, error }));
} finally {
  await context.close();
}
