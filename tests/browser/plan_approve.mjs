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
import { env, run } from "./ui.mjs";

const base = env("AIRLOCK_URL").replace(/\/$/, "");
const token = env("HUMAN_TOKEN");
const shots = env("SCREENSHOT_DIR");
const wanted = process.env.APPROVAL_ID || "";
const comment = process.env.COMMENT || "Steps, schemas and budget match the change ticket.";

const steps = async ({ page, summary, shot, onPhone, signIn, openApproval, approve }) => {
  summary.mobile_overflow = false;
  await signIn(token);

  // The inbox lists the proposal like any approval.
  const row = wanted
    ? page.locator(`tr[data-approval="${wanted}"]`)
    : page.locator("tr[data-approval]", { has: page.locator("td.tool a", { hasText: "airlock__propose_plan" }) }).first();
  await row.waitFor({ state: "visible" });
  summary.approval = await row.getAttribute("data-approval");
  summary.inbox_tool = (await row.locator("td.tool a").first().textContent()).trim();
  await shot("plan-0-inbox.png");

  // Its approval page shows the plan for review.
  await openApproval(row, "td.tool a", "#h-plan");
  summary.sections = await page.locator("section h2").allTextContents();
  summary.goal = (await page.locator("p.goal").first().textContent()).trim();
  summary.steps = await page.locator("ol.steps li.step").evaluateAll((items) => items.map((li) => li.dataset.step));
  summary.step_tools = await page.locator("ol.steps li.step code.step-tool").allTextContents();
  summary.schemas = await page.locator("ol.steps pre.schema").count();
  // The raw JSON is there for whoever wants it, folded away.
  summary.raw_json_folded = !(await page.locator("details pre.json").isVisible());
  summary.plan_href = await page.getAttribute("#plan-link", "href");
  await shot("plan-1-approval.png");
  await onPhone("plan-1-approval-mobile.png");

  // Approve it, as any approval.
  await approve(comment);
  await shot("plan-2-approved.png");

  // The plan's page: in force, steps waiting for their calls.
  await Promise.all([page.waitForURL(/\/ui\/sessions\/[^/]+\/plans\//), page.click("#plan-link")]);
  await page.waitForSelector("#plan-status");
  summary.plan_status = (await page.textContent("#plan-status")).trim();
  summary.plan_steps = await page
    .locator("ol.steps li.step")
    .evaluateAll((items) => items.map((li) => [li.dataset.step, li.querySelector(".step-status")?.textContent.trim()]));
  await shot("plan-3-plan.png");
  await onPhone("plan-3-plan-mobile.png");

  if (summary.status !== "approved") summary.problems.push(`status after approving is \`${summary.status}\``);
  if (summary.plan_status !== "approved") summary.problems.push(`the plan page says \`${summary.plan_status}\``);
  if (summary.steps.length === 0) summary.problems.push("the approval page shows no steps");
};

await run({ base, shots, failureShot: "plan-failure.png" }, steps);
