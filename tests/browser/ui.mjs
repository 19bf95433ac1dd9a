// What the browser tests of airlock's review UI share: Debian's Chromium driven by
// playwright-core in a fresh temporary profile, sign-in with a token at /ui/login, screenshots,
// the checks every page gets (no errors, no requests outside airlock, not wider than a phone),
// and the run's JSON summary on stdout.
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };
const STEP_TIMEOUT = 30_000;

// The environment variable `name` (or `fallback`); a missing or empty one is an error.
export function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") throw new Error(`set ${name}`);
  return v;
}

// One JSON object per stdout line.
export const say = (obj) => console.log(JSON.stringify(obj));

// Headless Chromium in a fresh temporary profile, talking to nothing but the pages it is sent
// to. `close()` ends it and removes the profile.
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "airlock-chromium-"));
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
    viewport: DESKTOP,
    deviceScaleFactor: 1,
  });
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

// Runs `steps(ui)` in a browser against the airlock at `base`, then prints the summary and
// exits: 0 only if the steps finished and nothing went wrong on the way. `ui` holds the `page`,
// the `summary` (steps add what they saw to it, and anything wrong to `summary.problems`) and
// the helpers below. Anything a page complains about (a CSP violation, a script error) and any
// request that leaves airlock's origin is a problem too. Screenshots go to `shots`; if a step
// throws, the page as it was goes to `failureShot`.
export async function run({ base, shots, failureShot = "failure.png" }, steps) {
  mkdirSync(shots, { recursive: true });
  const summary = { ok: false, screenshots: [], problems: [] };
  const browser = await launch();
  let page;
  try {
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on("pageerror", (e) => summary.problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") summary.problems.push(`console: ${m.text()}`);
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(base)) summary.problems.push(`external request: ${r.url()}`);
    });
    page.setDefaultTimeout(STEP_TIMEOUT);

    const shot = async (name) => {
      const path = join(shots, name);
      await page.screenshot({ path, fullPage: true });
      summary.screenshots.push(path);
    };
    // Whether the current page is wider than the window.
    const overflows = () => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    // Notes in `summary.mobile_overflow` whether the current page is wider than the phone.
    const noteOverflow = async () => {
      summary.mobile_overflow = summary.mobile_overflow || (await overflows());
    };
    // Screenshots the current page on a phone, noting whether it is wider than the screen.
    const onPhone = async (name) => {
      await page.setViewportSize(PHONE);
      await noteOverflow();
      await shot(name);
      await page.setViewportSize(DESKTOP);
    };
    // Signs in at /ui/login with `token` and lands on the inbox; `loginShot` names a screenshot
    // of the sign-in page.
    const signIn = async (token, { loginShot } = {}) => {
      await page.goto(`${base}/ui`);
      await page.waitForURL(/\/ui\/login$/);
      if (loginShot) await shot(loginShot);
      await page.fill("#token", token);
      await Promise.all([page.waitForURL(/\/ui\/inbox$/), page.click("button[type=submit]")]);
      summary.signed_in = true;
    };
    // Opens the approval of the inbox's `row` and waits for `selector` on its page.
    const openApproval = async (row, link, selector) => {
      await Promise.all([page.waitForURL(/\/ui\/approvals\//), row.locator(link).first().click()]);
      await page.waitForSelector(selector);
    };
    // Votes to approve on the open approval page, with `comment` (and `totp`, if given);
    // returns the status the page then shows.
    const approve = async (comment, totp) => {
      await page.fill("#comment", comment);
      if (totp !== undefined) await page.fill("#totp", totp);
      await Promise.all([page.waitForURL(/voted=approve/), page.click("button.approve")]);
      await page.waitForSelector(".flash.ok");
      summary.flash = (await page.textContent(".flash.ok")).trim();
      summary.status = (await page.textContent("#status")).trim();
      return summary.status;
    };

    await steps({ page, summary, shot, overflows, noteOverflow, onPhone, signIn, openApproval, approve });
    if (summary.mobile_overflow) summary.problems.push("a page is wider than a 390 px phone screen");
    summary.ok = summary.problems.length === 0;
  } catch (e) {
    summary.problems.push(String(e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e));
    if (page) {
      await page.screenshot({ path: join(shots, failureShot), fullPage: true }).catch(() => {});
      summary.screenshots.push(join(shots, failureShot));
      summary.url = page.url();
    }
  } finally {
    await browser.close();
  }
  say(summary);
  process.exit(summary.ok ? 0 : 1);
}
