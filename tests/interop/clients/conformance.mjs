// Run the official MCP conformance suite (@modelcontextprotocol/conformance 0.1.16) in server mode
// against a streamable HTTP MCP endpoint, and sum up its results per scenario.
//
//   node tests/interop/clients/conformance.mjs URL [--suite active|all|pending]
//       [--scenario NAME]... [--results DIR] [--timeout SECONDS] [--verbose]
//
// The suite acts as an MCP client (TypeScript SDK) and runs each scenario against URL; it cannot
// send custom headers, so put tests/interop/conformance_shim.mjs in front of an endpoint that
// needs `Authorization`. It needs Node >= 22 (fs.globSync): it is run with the Node 22 that
// install.sh puts at tests/interop/node_modules/.bin/node; this script itself runs on any Node.
// Default: the `active` suite (30 scenarios; `pending` has 2 more, `all` both). `--scenario` (may
// be repeated) runs just those. The suite writes `<dir>/server-<scenario>-<time>/checks.json`;
// <dir> is a fresh temporary directory, removed at the end unless `--results DIR` names one to
// keep (the suite's own console output is saved there as conformance.log). `--timeout` bounds the
// whole run (default 300 s). `--verbose` copies the suite's output to stderr as it runs.
//
// Output: one line per scenario (`PASS name` or `FAIL name` with the failed checks), then ONE JSON
// object as the last line of stdout (`failures` names the failed scenarios, plus one entry in
// parentheses when the run failed as a whole, which `failed` counts too):
//   {"passed": N, "failed": M, "failures": [names], "warnings": [names], "scenarios": {name:
//    {"ok": bool, "success": n, "failure": n, "warning": n, "failed_checks": [{id, message}]}},
//    "results": DIR | null}
// A scenario passes when none of its checks is a FAILURE (WARNING and INFO checks don't fail it,
// as in the suite's own exit status). Exit status 0 when every scenario passed, 1 otherwise
// (including a scenario with no result, a suite that exited non-zero, or a time-out), 2 on usage
// errors or a missing install.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const node22 = path.join(here, "node_modules/.bin/node");
const cli = path.join(here, "node_modules/@modelcontextprotocol/conformance/dist/index.js");

function usage(msg) {
  if (msg) console.error(`conformance.mjs: ${msg}`);
  console.error("usage: conformance.mjs URL [--suite active|all|pending] [--scenario NAME]... [--results DIR] [--timeout SECONDS] [--verbose]");
  process.exit(2);
}
const argv = process.argv.slice(2);
let url, suite, resultsArg, timeoutS = 300, verbose = false;
const scenarios = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  if (a === "--suite") suite = value();
  else if (a === "--scenario") scenarios.push(value());
  else if (a === "--results") resultsArg = value();
  else if (a === "--timeout") timeoutS = Number(value());
  else if (a === "--verbose") verbose = true;
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else if (url === undefined) url = a;
  else usage(`unexpected argument ${a}`);
}
if (!url) usage("URL is missing");
if (suite && scenarios.length) usage("give --suite or --scenario, not both");
if (!(timeoutS > 0)) usage("--timeout must be a positive number of seconds");
for (const f of [node22, cli]) {
  if (!fs.existsSync(f)) {
    console.error(`conformance.mjs: ${f} is missing: run tests/interop/install.sh`);
    process.exit(2);
  }
}

const resultsDir = resultsArg ? path.resolve(resultsArg) : fs.mkdtempSync(path.join(os.tmpdir(), "mcp-conformance-"));
fs.mkdirSync(resultsDir, { recursive: true });
const logPath = path.join(resultsDir, "conformance.log");
const logFile = fs.openSync(logPath, "a");
const deadline = Date.now() + timeoutS * 1000;
let timedOut = false;

// Runs the suite's CLI once; resolves to {code, output}.
function runCli(args) {
  return new Promise((resolve) => {
    const child = spawn(node22, [cli, "server", "--url", url, "-o", resultsDir, ...args], {
      cwd: resultsDir, // anything it writes relative to its working directory stays out of the repo
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
    });
    let output = "";
    const take = (chunk) => {
      output += chunk;
      fs.writeSync(logFile, chunk);
      if (verbose) process.stderr.write(chunk);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, Math.max(0, deadline - Date.now()));
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), output });
    });
  });
}

const runs = [];
if (scenarios.length) {
  for (const s of scenarios) {
    if (timedOut) break;
    runs.push({ ...(await runCli(["--scenario", s])), expected: [s] });
  }
} else {
  runs.push({ ...(await runCli(["--suite", suite ?? "active"])), expected: null });
}
fs.closeSync(logFile);

// Which scenarios ran (or were meant to), in order.
const names = [];
let announced = 0;
for (const r of runs) {
  const m = /Running \S+ suite \((\d+) scenarios?\)/.exec(r.output);
  if (m) announced += Number(m[1]);
  else if (r.expected) announced += r.expected.length;
  const ran = [...r.output.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((x) => x[1]);
  for (const n of r.expected ?? ran) if (!names.includes(n)) names.push(n);
}
const dirs = fs.readdirSync(resultsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

const report = { passed: 0, failed: 0, failures: [], warnings: [], scenarios: {}, results: resultsArg ? resultsDir : null };
for (const name of names) {
  const re = new RegExp(`^server-${escape(name)}-\\d{4}-\\d{2}-\\d{2}T[\\d-]+Z$`);
  const dir = dirs.filter((d) => re.test(d)).sort().pop();
  let checks = null;
  if (dir) {
    try {
      checks = JSON.parse(fs.readFileSync(path.join(resultsDir, dir, "checks.json"), "utf8"));
    } catch {}
  }
  const entry = { ok: false, success: 0, failure: 0, warning: 0, failed_checks: [] };
  if (Array.isArray(checks)) {
    for (const c of checks) {
      if (c.status === "SUCCESS") entry.success++;
      else if (c.status === "WARNING") entry.warning++;
      else if (c.status === "FAILURE") {
        entry.failure++;
        entry.failed_checks.push({ id: c.id, message: c.errorMessage ?? c.description ?? "" });
      }
    }
    entry.ok = entry.failure === 0;
  } else {
    entry.failed_checks.push({ id: "no-result", message: timedOut ? "the run timed out" : "the suite wrote no checks.json for it" });
  }
  report.scenarios[name] = entry;
  if (entry.ok) report.passed++;
  else {
    report.failed++;
    report.failures.push(name);
  }
  if (entry.warning) report.warnings.push(name);
}
// Scenarios the suite announced but never started (it crashed or was killed).
for (let i = names.length; i < announced; i++) {
  report.failed++;
  report.failures.push(`(scenario ${i + 1} of ${announced} did not run)`);
}
// A run that went wrong as a whole counts as one more failure, so `failed` is never 0 then.
const badExit = runs.filter((r) => r.code !== 0);
const whole = timedOut
  ? `(timed out after ${timeoutS} s)`
  : badExit.length && report.failed === 0
    ? `(the suite exited with status ${badExit[0].code})`
    : names.length === 0
      ? "(no scenario ran)"
      : null;
if (whole) {
  report.failed++;
  report.failures.push(whole);
}

for (const [name, e] of Object.entries(report.scenarios)) {
  const counts = `${e.success} ok, ${e.failure} failed, ${e.warning} warnings`;
  console.log(`${e.ok ? "PASS" : "FAIL"} ${name} (${counts})`);
  for (const c of e.failed_checks) console.log(`     ${c.id}: ${c.message}`);
}
console.log(`conformance summary: ${report.passed} of ${names.length} scenarios passed against ${url}` + (whole ? ` ${whole}` : ""));
if (report.failures.length && !resultsArg) {
  // The temporary directory goes away: show the end of the suite's own output (on stderr).
  process.stderr.write(`--- conformance suite output (last 200 lines) ---\n`);
  process.stderr.write(fs.readFileSync(logPath, "utf8").split("\n").slice(-200).join("\n") + "\n");
}
if (!resultsArg) fs.rmSync(resultsDir, { recursive: true, force: true });
console.log(JSON.stringify(report));
process.exit(report.failed === 0 ? 0 : 1);
