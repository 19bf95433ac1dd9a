// Drives airlock's review UI in Debian's Chromium with playwright-core, as a human would:
// sign in, wait on the inbox until a pending approval shows up by itself (the page is not
// reloaded), open it, approve it with a comment and a TOTP code, and check the outcome.
// Screenshots (desktop and a 390x844 phone) go to SCREENSHOT_DIR.
//
// Environment:
//   AIRLOCK_URL      base URL of a running airlock, e.g. http://127.0.0.1:7878
//   HUMAN_TOKEN      the approver's airlock token
//   TOTP_CODE        a current 6-digit code, or
//   TOTP_SECRET      the approver's base32 TOTP secret (a code is computed when needed)
//   SCREENSHOT_DIR   where the PNG files go (created if missing)
//   COMMENT          optional vote comment
//
// Stdout protocol (one JSON object per line): {"event":"ready"} once the inbox is open and
// live, so the driver can create the approval; then a final summary line with "ok".
// Exit code 0 only if every step passed.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") throw new Error(`set ${name}`);
  return v;
};
const base = env("AIRLOCK_URL").replace(/\/$/, "");
const token = env("HUMAN_TOKEN");
const shots = env("SCREENSHOT_DIR");
const comment = process.env.COMMENT || "Checked the rule and the port with the requester; fine for the rollout.";
const STEP_TIMEOUT = 30_000;

// RFC 6238 (SHA-1, 6 digits, 30 s), for when only the secret is given.
function totpNow(secret) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/[\s=]/g, "").toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error("TOTP_SECRET is not base32");
    bits += i.toString(2).padStart(5, "0");
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, "0");
}
const totp = () => process.env.TOTP_CODE || totpNow(env("TOTP_SECRET"));

const say = (obj) => console.log(JSON.stringify(obj));
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "airlock-chromium-"));
const summary = { ok: false, screenshots: [], problems: [] };

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
  deviceScaleFactor: 1,
});

// Anything the pages complain about (a CSP violation, a script error) fails the run.
function watch(page) {
  page.on("pageerror", (e) => summary.problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") summary.problems.push(`console: ${m.text()}`);
  });
  // No request may leave airlock's origin.
  page.on("request", (r) => {
    if (!r.url().startsWith(base)) summary.problems.push(`external request: ${r.url()}`);
  });
}

async function shot(page, name) {
  const path = join(shots, name);
  await page.screenshot({ path, fullPage: true });
  summary.screenshots.push(path);
}

async function overflows(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
}

let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  watch(page);
  page.setDefaultTimeout(STEP_TIMEOUT);

  // Sign in.
  await page.goto(`${base}/ui`);
  await page.waitForURL(/\/ui\/login$/);
  await shot(page, "0-sign-in.png");
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(/\/ui\/inbox$/), page.click("button[type=submit]")]);
  summary.signed_in = true;

  // The inbox is open and listening; mark the document so a reload would show.
  await page.waitForSelector("#live[data-state=live]");
  await page.evaluate(() => {
    window.__airlockNoReload = true;
  });
  summary.live = true;
  const before = await page.locator("tr[data-approval]").evaluateAll((rows) => rows.map((r) => r.dataset.approval));
  say({ event: "ready", pending: before.length });

  // The approval the driver creates now must show up without a reload.
  const fresh = `tr[data-approval]${before.map((id) => `:not([data-approval="${id}"])`).join("")}`;
  const row = page.locator(fresh).first();
  await row.waitFor({ state: "visible", timeout: 45_000 });
  summary.appeared_live = await page.evaluate(() => window.__airlockNoReload === true);
  summary.approval = await row.getAttribute("data-approval");
  summary.inbox_title = await page.title();
  await shot(page, "1-inbox.png");
  await page.setViewportSize({ width: 390, height: 844 });
  summary.mobile_overflow = await overflows(page);
  await shot(page, "1-inbox-mobile.png");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Open it.
  await Promise.all([page.waitForURL(/\/ui\/approvals\//), row.locator("a").first().click()]);
  await page.waitForSelector("#comment");
  summary.detail_sections = await page.locator("section h2").allTextContents();
  summary.diff_lines = await page.locator("pre.diff .add, pre.diff .del").count();
  // Invisible and direction-changing characters in the arguments show as markers, with a warning.
  summary.hidden_markers = await page.locator("pre.json mark.hidden-char").allTextContents();
  summary.hidden_warning = await page.locator(".flash.hidden-chars").count();
  await shot(page, "2-detail.png");
  await page.setViewportSize({ width: 390, height: 844 });
  summary.mobile_overflow = summary.mobile_overflow || (await overflows(page));
  await shot(page, "2-detail-mobile.png");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Approve with a comment and a TOTP code.
  await page.fill("#comment", comment);
  await page.fill("#totp", totp());
  await Promise.all([page.waitForURL(/voted=approve/), page.click("button.approve")]);
  await page.waitForSelector(".flash.ok");
  summary.flash = (await page.textContent(".flash.ok")).trim();
  summary.status = (await page.textContent("#status")).trim();
  summary.approved = summary.status === "approved";
  await shot(page, "3-approved.png");

  // History lists it.
  await page.goto(`${base}/ui/history`);
  await page.waitForSelector(`tr[data-approval="${summary.approval}"]`);
  await shot(page, "4-history.png");

  // The same pages on a phone.
  const detailUrl = `${base}/ui/approvals/${summary.approval}`;
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(detailUrl);
  summary.mobile_overflow = summary.mobile_overflow || (await overflows(page));
  await shot(page, "5-mobile-detail.png");
  await page.goto(`${base}/ui/history`);
  summary.mobile_overflow = summary.mobile_overflow || (await overflows(page));
  await shot(page, "6-mobile-history.png");

  if (summary.mobile_overflow) summary.problems.push("a page is wider than a 390 px phone screen");
  if (!summary.appeared_live) summary.problems.push("the inbox was reloaded instead of updated live");
  if (!summary.approved) summary.problems.push(`status after approving is \`${summary.status}\``);
  summary.ok = summary.problems.length === 0;
} catch (e) {
  summary.problems.push(String(e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e));
  if (page) {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    summary.screenshots.push(join(shots, "failure.png"));
    summary.url = page.url();
  }
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
say(summary);
process.exit(summary.ok ? 0 : 1);
