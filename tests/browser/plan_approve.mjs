// Drives airlock's review UI in Debian's Chromium with playwright-core to approve a plan, as a
// human would: sign in, open the inbox, open the plan proposal's approval, check that the page
// shows the plan step by step (not raw JSON), approve it, and follow the link to the plan's page.
// Screenshots (desktop and a 390x844 phone) go to SCREENSHOT_DIR.
//
// Environment:
//   AIRLOCK_URL      base URL of a running airlock, e.g. http://127.0.0.1:7878
//   HUMAN_TOKEN      the approver's airlock token (an approver without TOTP)
//   APPROVAL_ID      optional: the plan proposal's approval; else the first pending
//                    `airlock__propose_plan` in the inbox
//   SCREENSHOT_DIR   where the PNG files go (created if missing)
//   COMMENT          optional vote comment
//
// Stdout: one JSON summary line with "ok". Exit code 0 only if every step passed.
import { chromium } from "playwright-core";
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
const wanted = process.env.APPROVAL_ID || "";
const comment = process.env.COMMENT || "Steps, schemas and budget match the change ticket.";
const STEP_TIMEOUT = 30_000;

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

// Anything the pages complain about (a CSP violation, a script error) fails the run, and no
// request may leave airlock's origin.
function watch(page) {
  page.on("pageerror", (e) => summary.problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") summary.problems.push(`console: ${m.text()}`);
  });
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

// Screenshots of the current page on a phone, noting whether it is wider than the screen.
async function onPhone(page, name) {
  await page.setViewportSize({ width: 390, height: 844 });
  summary.mobile_overflow = summary.mobile_overflow || (await overflows(page));
  await shot(page, name);
  await page.setViewportSize({ width: 1280, height: 900 });
}

let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  watch(page);
  page.setDefaultTimeout(STEP_TIMEOUT);
  summary.mobile_overflow = false;

  // Sign in.
  await page.goto(`${base}/ui`);
  await page.waitForURL(/\/ui\/login$/);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(/\/ui\/inbox$/), page.click("button[type=submit]")]);
  summary.signed_in = true;

  // The inbox lists the proposal like any approval.
  const row = wanted
    ? page.locator(`tr[data-approval="${wanted}"]`)
    : page.locator("tr[data-approval]", { has: page.locator("td.tool a", { hasText: "airlock__propose_plan" }) }).first();
  await row.waitFor({ state: "visible" });
  summary.approval = await row.getAttribute("data-approval");
  summary.inbox_tool = (await row.locator("td.tool a").first().textContent()).trim();
  await shot(page, "plan-0-inbox.png");

  // Its approval page shows the plan for review.
  await Promise.all([page.waitForURL(/\/ui\/approvals\//), row.locator("td.tool a").first().click()]);
  await page.waitForSelector("#h-plan");
  summary.sections = await page.locator("section h2").allTextContents();
  summary.goal = (await page.locator("p.goal").first().textContent()).trim();
  summary.steps = await page.locator("ol.steps li.step").evaluateAll((items) => items.map((li) => li.dataset.step));
  summary.step_tools = await page.locator("ol.steps li.step code.step-tool").allTextContents();
  summary.schemas = await page.locator("ol.steps pre.schema").count();
  // The raw JSON is there for whoever wants it, folded away.
  summary.raw_json_folded = !(await page.locator("details pre.json").isVisible());
  summary.plan_href = await page.getAttribute("#plan-link", "href");
  await shot(page, "plan-1-approval.png");
  await onPhone(page, "plan-1-approval-mobile.png");

  // Approve it, as any approval.
  await page.fill("#comment", comment);
  await Promise.all([page.waitForURL(/voted=approve/), page.click("button.approve")]);
  await page.waitForSelector(".flash.ok");
  summary.flash = (await page.textContent(".flash.ok")).trim();
  summary.status = (await page.textContent("#status")).trim();
  await shot(page, "plan-2-approved.png");

  // The plan's page: in force, steps waiting for their calls.
  await Promise.all([page.waitForURL(/\/ui\/sessions\/[^/]+\/plans\//), page.click("#plan-link")]);
  await page.waitForSelector("#plan-status");
  summary.plan_status = (await page.textContent("#plan-status")).trim();
  summary.plan_steps = await page
    .locator("ol.steps li.step")
    .evaluateAll((items) => items.map((li) => [li.dataset.step, li.querySelector(".step-status")?.textContent.trim()]));
  await shot(page, "plan-3-plan.png");
  await onPhone(page, "plan-3-plan-mobile.png");

  if (summary.mobile_overflow) summary.problems.push("a page is wider than a 390 px phone screen");
  if (summary.status !== "approved") summary.problems.push(`status after approving is \`${summary.status}\``);
  if (summary.plan_status !== "approved") summary.problems.push(`the plan page says \`${summary.plan_status}\``);
  if (summary.steps.length === 0) summary.problems.push("the approval page shows no steps");
  summary.ok = summary.problems.length === 0;
} catch (e) {
  summary.problems.push(String(e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e));
  if (page) {
    await page.screenshot({ path: join(shots, "plan-failure.png"), fullPage: true }).catch(() => {});
    summary.screenshots.push(join(shots, "plan-failure.png"));
    summary.url = page.url();
  }
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
