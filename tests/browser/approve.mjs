// Drives airlock's review UI in Debian's Chromium with playwright-core:
// sign in, wait for a pending approval to appear in the inbox (live), open it, approve it with a
// comment and a TOTP code, and check the result. Screenshots go to SCREENSHOT_DIR.
//
// env: AIRLOCK_URL, HUMAN_TOKEN, TOTP_CODE, SCREENSHOT_DIR
import { chromium } from "playwright-core";

const url = process.env.AIRLOCK_URL;
const shots = process.env.SCREENSHOT_DIR;
// playwright-core gives each launch a fresh, empty profile of its own.
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { signed_in: false, appeared: false, approved: false, screenshots: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`${url}/ui`);
  await page.fill("#token", process.env.HUMAN_TOKEN);
  await page.click("button[type=submit]");
  await page.waitForURL("**/ui/inbox");
  result.signed_in = true;
  console.log("ready");  // the test now asks for an approval
  // The inbox updates by itself when the approval arrives.
  const row = page.locator("tr[data-approval]").first();
  await row.waitFor({ timeout: 30000 });
  result.appeared = true;
  await page.screenshot({ path: `${shots}/1-inbox.png`, fullPage: true });
  result.screenshots.push("1-inbox.png");
  await row.locator("a").click();
  await page.waitForSelector("#comment");
  await page.screenshot({ path: `${shots}/2-detail.png`, fullPage: true });
  result.screenshots.push("2-detail.png");
  await page.fill("#comment", "checked the firewall change with the requester");
  await page.fill("#totp", process.env.TOTP_CODE);
  await page.click("button.approve");
  await page.waitForSelector(".flash.ok");
  result.approved = (await page.textContent("#status")).trim() === "approved";
  await page.screenshot({ path: `${shots}/3-approved.png`, fullPage: true });
  result.screenshots.push("3-approved.png");
  const mobile = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await mobile.context().addCookies(await page.context().cookies());
  await mobile.goto(page.url());
  await mobile.screenshot({ path: `${shots}/4-mobile.png`, fullPage: true });
  result.screenshots.push("4-mobile.png");
  result.mobile_overflow = await mobile.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
