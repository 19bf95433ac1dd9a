// Drives airlock's review UI in Debian's Chromium with playwright-core: a person signs in at
// the organisation's identity provider (the test OpenID provider's sign-in page, see
// tests/identity/provider.mjs), comes back signed in, and approves a held action.
//
// Environment:
//   AIRLOCK_URL      base URL of a running airlock whose `[identity.humans]` is the provider
//   LOGIN            the person's login name at the provider (any password is accepted there)
//   APPROVAL         the id of the pending approval to approve
//   SCREENSHOT_DIR   where the PNG files go (created if missing)
//
// Stdout: one JSON summary line with "ok". Exit code 0 only if every step passed.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { env, launch } from "./ui.mjs";

const base = env("AIRLOCK_URL").replace(/\/$/, "");
const login = env("LOGIN");
const approval = env("APPROVAL");
const shots = env("SCREENSHOT_DIR");
mkdirSync(shots, { recursive: true });
const summary = { ok: false, problems: [] };

const browser = await launch();
const context = browser.context;
// The provider's page imports a web font; nothing may leave this machine.
await context.route((url) => !/^http:\/\/127\.0\.0\.1[:/]/.test(url.toString()), (route) => route.abort());

let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (e) => {
    if (page.url().startsWith(base)) summary.problems.push(`page error: ${e.message}`);
  });

  await page.goto(`${base}/ui`);
  await page.waitForURL(/\/ui\/login$/);
  await Promise.all([page.waitForURL((u) => !u.toString().startsWith(base)), page.click("#sso")]);
  summary.at_provider = (await page.locator('input[name="login"]').count()) === 1;
  await page.screenshot({ path: join(shots, "0-provider-sign-in.png"), fullPage: true });
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await Promise.all([page.waitForURL(/\/ui\/inbox$/), page.click("button[type=submit]")]);
  summary.signed_in_as = (await page.textContent("body")).includes(login) ? login : null;
  await page.screenshot({ path: join(shots, "1-inbox.png"), fullPage: true });

  await page.goto(`${base}/ui/approvals/${approval}`);
  await page.waitForSelector("#comment");
  await page.fill("#comment", "Signed in at the provider; fine.");
  await Promise.all([page.waitForURL(/voted=approve/), page.click("button.approve")]);
  await page.waitForSelector(".flash.ok");
  summary.status = (await page.textContent("#status")).trim();
  await page.screenshot({ path: join(shots, "2-approved.png"), fullPage: true });
  if (!summary.at_provider) summary.problems.push("the sign-in page was not the provider's");
  if (summary.signed_in_as !== login) summary.problems.push("the inbox does not name the person");
  if (summary.status !== "approved") summary.problems.push(`status after approving is \`${summary.status}\``);
  summary.ok = summary.problems.length === 0;
} catch (e) {
  summary.problems.push(String(e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e));
  if (page) {
    summary.url = page.url();
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
process.exit(summary.ok ? 0 : 1);
