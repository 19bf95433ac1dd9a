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
import { createHmac } from "node:crypto";
import { PHONE, env, run, say } from "./ui.mjs";

const base = env("AIRLOCK_URL").replace(/\/$/, "");
const token = env("HUMAN_TOKEN");
const shots = env("SCREENSHOT_DIR");
const comment = process.env.COMMENT || "Checked the rule and the port with the requester; fine for the rollout.";

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

const steps = async ({ page, summary, shot, noteOverflow, onPhone, signIn, openApproval, approve }) => {
  await signIn(token, { loginShot: "0-sign-in.png" });

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
  await shot("1-inbox.png");
  await onPhone("1-inbox-mobile.png");

  // Open it.
  await openApproval(row, "a", "#comment");
  summary.detail_sections = await page.locator("section h2").allTextContents();
  summary.diff_lines = await page.locator("pre.diff .add, pre.diff .del").count();
  // Invisible and direction-changing characters in the arguments show as markers, with a warning.
  summary.hidden_markers = await page.locator("pre.json mark.hidden-char").allTextContents();
  summary.hidden_warning = await page.locator(".flash.hidden-chars").count();
  await shot("2-detail.png");
  await onPhone("2-detail-mobile.png");

  // Approve with a comment and a TOTP code.
  summary.approved = (await approve(comment, totp())) === "approved";
  await shot("3-approved.png");

  // History lists it.
  await page.goto(`${base}/ui/history`);
  await page.waitForSelector(`tr[data-approval="${summary.approval}"]`);
  await shot("4-history.png");

  // The same pages on a phone.
  await page.setViewportSize(PHONE);
  await page.goto(`${base}/ui/approvals/${summary.approval}`);
  await noteOverflow();
  await shot("5-mobile-detail.png");
  await page.goto(`${base}/ui/history`);
  await noteOverflow();
  await shot("6-mobile-history.png");

  if (!summary.appeared_live) summary.problems.push("the inbox was reloaded instead of updated live");
  if (!summary.approved) summary.problems.push(`status after approving is \`${summary.status}\``);
};

await run({ base, shots }, steps);
