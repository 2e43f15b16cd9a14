// weir's browser test: a real headless Chromium (Debian's) against a running `weir standalone`,
// driven by playwright-core. Started by cli/tests/it/browser.rs, which starts the server and
// passes: BASE_URL, ADMIN_PASSWORD, VIEWER_PASSWORD, SHOTS (a folder for screenshots).
// Every check throws on failure; the process exits 1 with the step that failed.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const base = need("BASE_URL");
const adminPassword = need("ADMIN_PASSWORD");
const viewerPassword = need("VIEWER_PASSWORD");
const shots = need("SHOTS");
const fixmeFile = need("FIXME_FILE");
const fixmeFixed = need("FIXME_FIXED");
mkdirSync(shots, { recursive: true });

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

let step = "start";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const admin = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await admin.newPage();
try {
  page.setDefaultTimeout(30_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Anything the Content-Security-Policy blocks (an inline style or handler left in a
  // template) is reported on the console: it counts as an error too.
  page.on("console", (m) => { if (m.text().includes("Content Security Policy")) errors.push(m.text()); });
  page.on("dialog", (d) => d.accept());

  step = "log in as the admin";
  await page.goto(`${base}/`);
  check(page.url().includes("/login"), "an anonymous visitor is sent to the login page");
  await page.screenshot({ path: join(shots, "login.png") });
  await page.fill("input[name=name]", "admin");
  await page.fill("input[name=password]", "not the password");
  await page.click("button[type=submit]");
  check((await page.textContent(".flash.error")).includes("wrong"), "a wrong password is refused");
  await page.fill("input[name=password]", adminPassword);
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/`);

  step = "see the example DAGs";
  for (const dag of ["hello_shell", "hr_migration", "covid_daily", "table_copy", "slow_log"]) {
    check(await page.isVisible(`tr[data-dag="${dag}"]`), `the DAG list shows ${dag}`);
  }
  const banner = await page.textContent(".banner.error");
  check(/broken\.yaml:3:\d+/.test(banner), `the import-error banner names file and line: ${banner}`);
  const cut = await page.$eval(".banner.error pre", (pre) => pre.scrollWidth > pre.clientWidth + 1);
  check(!cut, "a long import error wraps instead of being cut off");
  await page.screenshot({ path: join(shots, "dags.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: join(shots, "dags-dark.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });

  step = "trigger hello_shell from its form";
  await page.goto(`${base}/dags/hello_shell`);
  let navigations = 0;
  await page.click("a.button.primary:has-text('Trigger')");
  await page.waitForURL(/\/dags\/hello_shell\/trigger$/);
  await page.screenshot({ path: join(shots, "trigger.png"), fullPage: true });
  await page.click("button[type=submit]:has-text('Trigger')");
  await page.waitForURL(/\/runs\/hello_shell__/);
  const runId = decodeURIComponent(page.url().split("/runs/")[1]);

  step = "the run page follows the run to its end without reloading";
  let runNavigations = 0;
  const countRunNav = (f) => { if (f === page.mainFrame()) runNavigations += 1; };
  page.on("framenavigated", countRunNav);
  await page.waitForSelector("#run-state.state-success", { timeout: 60_000 });
  // State, graph, dates and actions come in one update.
  const nodes = await page.$$eval("svg.dag-graph g.node", (gs) => gs.map((g) => g.getAttribute("class")));
  check(nodes.length === 5 && nodes.every((c) => c.includes("state-success")), `every graph node is green: ${nodes}`);
  const ended = await page.$eval("dl.facts", (dl) => [...dl.querySelectorAll("dt")].find((d) => d.textContent === "Ended").nextElementSibling.textContent.trim());
  check(ended !== "—" && ended !== "", `the Ended date is shown: ${ended}`);
  check((await page.$$("button:has-text('Cancel run')")).length === 0, "a finished run offers no Cancel");
  page.off("framenavigated", countRunNav);
  check(runNavigations === 0, `the run page updated in place (${runNavigations} navigations)`);

  step = "a second trigger at the same date explains how to rerun";
  for (let i = 0; i < 2; i++) {
    await page.goto(`${base}/dags/hello_shell/trigger`);
    await page.fill("input[name=logical_date]", "2024-01-15");
    await page.click("button[type=submit]:has-text('Trigger')");
    await page.waitForLoadState();
  }
  check(await page.isVisible("header.top a.brand"), "the conflict page has the site's layout");
  const conflict = await page.textContent("main");
  check(/409/.test(conflict) && conflict.includes("clear and rerun"), `the conflict page says how to rerun: ${conflict}`);
  await page.screenshot({ path: join(shots, "conflict.png"), fullPage: true });

  step = "watch the run turn green in the grid without reloading";
  await page.goto(`${base}/dags/hello_shell`);
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations += 1; });
  await page.waitForSelector(`#grid a.run-bar[data-run="${runId}"][data-state="success"]`, { timeout: 60_000 });
  check(navigations === 0, `the grid updated in place (${navigations} navigations)`);
  const labels = await page.$$eval("#grid .run-date", (ls) => ls.map((l) => l.textContent));
  check(labels.length > 0 && labels.every((l) => /^\d\d-\d\d/.test(l)), `grid columns are labelled with dates: ${labels}`);
  const cells = await page.$$eval(`#grid a.cell[data-run="${runId}"]`, (as) => as.map((a) => a.dataset.state));
  check(cells.length === 5 && cells.every((s) => s === "success"), `every task is green: ${cells}`);
  await page.screenshot({ path: join(shots, "grid.png"), fullPage: true });
  await page.goto(`${base}/dags/hello_shell?tab=graph`);
  check((await page.$$("svg.dag-graph g.node")).length === 5, "the graph has a node per task");
  await page.screenshot({ path: join(shots, "graph.png"), fullPage: true });
  await page.goto(`${base}/dags/hello_shell?tab=yaml`);
  check((await page.textContent("pre.source")).includes("hello_shell"), "the YAML tab shows the file");

  step = "open a task's live log";
  await page.goto(`${base}/dags/slow_log/trigger`);
  await page.click("button[type=submit]:has-text('Trigger')");
  await page.waitForURL(/\/runs\/slow_log__/);
  const slowRun = page.url();
  // Wait for the task to start, then open its page while it still writes.
  await page.waitForSelector("tr[data-task=tick][data-state=running]", { timeout: 30_000 });
  await page.goto(`${slowRun}/tasks/tick`);
  check(
    (await page.getAttribute("#log", "data-log")) !== null,
    `a running task's log is live (state ${await page.textContent("#ti-state")}, status ${await page.textContent("#log-status")})`,
  );
  const before = await page.$$eval("#log .line", (ls) => ls.length);
  await page.waitForFunction(() => document.querySelector("#log").textContent.includes("tick 8"), null, { timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector("#log-status").textContent.startsWith("finished"), null, { timeout: 30_000 });
  const after = await page.$$eval("#log .line", (ls) => ls.length);
  check(after > before, `lines arrived while watching (${before} -> ${after})`);
  check((await page.textContent("#ti-state")).trim() === "success", "the task's state turned success");
  await page.screenshot({ path: join(shots, "task-log.png"), fullPage: true });

  step = "clear a task and see it rerun";
  await page.goto(`${base}/runs/${encodeURIComponent(runId)}/tasks/greet`);
  await page.click("button[name=clear]");
  await page.goto(`${base}/runs/${encodeURIComponent(runId)}`);
  await page.waitForFunction(() => {
    const row = document.querySelector("#run-tasks tr[data-task=greet]");
    return row && row.dataset.state === "success" && row.children[2].textContent.trim().startsWith("2 /");
  }, null, { timeout: 60_000 });
  await page.screenshot({ path: join(shots, "run.png"), fullPage: true });

  step = "fix a failed DAG and rerun it on its current version";
  await page.goto(`${base}/dags/fixme/trigger`);
  await page.click("button[type=submit]:has-text('Trigger')");
  await page.waitForURL(/\/runs\/fixme__/);
  const fixmeRun = page.url();
  await page.waitForSelector("#run-state.state-failed", { timeout: 60_000 });
  writeFileSync(fixmeFile, fixmeFixed);
  // The scheduler reads the new version within its scan interval; the page shows it live.
  await page.waitForSelector("#latest-version", { timeout: 30_000 });
  await page.click("#version-diff summary");
  const diff = await page.textContent("#version-diff pre.diff");
  check(diff.includes("+") && diff.includes("fixed-version") && diff.includes("exit 3"), `the diff shows the fix: ${diff}`);
  await page.screenshot({ path: join(shots, "version-diff.png"), fullPage: true });
  await page.check("#latest-version");
  await page.click("button[name=failed_only]");
  await page.waitForURL(fixmeRun);
  await page.waitForSelector("#run-state.state-success", { timeout: 60_000 });
  const version = await page.textContent("#run-version");
  check(version.includes("(current)"), `the run moved to the current version: ${version}`);

  step = "preview a backfill";
  await page.goto(`${base}/dags/covid_daily/backfill`);
  await page.fill("input[name=from]", "2021-03-01");
  await page.fill("input[name=to]", "2021-03-03");
  await page.click("button[value=preview]");
  check((await page.$$("table.intervals tbody tr")).length === 3, "the preview lists 3 intervals");
  await page.screenshot({ path: join(shots, "backfill.png"), fullPage: true });

  step = "the assets pages show what table_copy wrote and read";
  await page.goto(`${base}/dags/table_copy/trigger`);
  await page.click("button[type=submit]:has-text('Trigger')");
  await page.waitForURL(/\/runs\/table_copy__/);
  await page.waitForSelector("#run-state.state-success", { timeout: 90_000 });
  await page.goto(`${base}/assets`);
  check(await page.isVisible('tr[data-asset="warehouse.main.copy_jobs"]'), "the assets page lists the copied table");
  check(await page.isVisible('svg.lineage-graph g[data-node="table_copy"]'), "the lineage graph shows the DAG");
  check(await page.isVisible('svg.lineage-graph g[data-node="warehouse.main.copy_jobs"]'), "the lineage graph shows the asset");
  const row = await page.textContent('tr[data-asset="warehouse.main.copy_jobs"]');
  check(row.includes("table_copy"), `the asset names its writer: ${row}`);
  await page.screenshot({ path: join(shots, "assets.png"), fullPage: true });
  await page.click('tr[data-asset="warehouse.main.copy_jobs"] a');
  await page.waitForURL(/\/assets\/warehouse\.main\.copy_jobs$/);
  check(await page.isVisible("svg.rows-chart"), "the asset page charts rows written");
  const events = await page.textContent("table.events");
  check(events.includes("table_copy__") && events.includes("write") && events.includes("16"), `the asset's events name the run and its rows: ${events}`);
  await page.screenshot({ path: join(shots, "asset.png"), fullPage: true });
  await page.goto(`${base}/dags/table_copy`);
  const assetsLine = await page.textContent("p.assets-line");
  check(assetsLine.includes("Downstream") && assetsLine.includes("warehouse.main.copy_jobs"), `the DAG page shows its downstream assets: ${assetsLine}`);

  step = "the audit log";
  await page.goto(`${base}/audit`);
  const audit = await page.textContent("table.audit");
  check(audit.includes("clear"), "the audit log shows the clear");
  check(audit.includes("user_create") && audit.includes("cli:"), `the audit log shows the CLI's user creation: ${audit}`);
  await page.screenshot({ path: join(shots, "audit.png"), fullPage: true });
  check(errors.length === 0, `no script errors: ${errors}`);

  step = "a viewer cannot trigger";
  const viewerCtx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const viewer = await viewerCtx.newPage();
  // An open-redirect attempt: a tab that the browser drops turns `/\t/evil.example` into
  // `//evil.example`. The login must land on weir's own home page.
  await viewer.goto(`${base}/login?next=/%09/evil.example`);
  await viewer.fill("input[name=name]", "viewer");
  await viewer.fill("input[name=password]", viewerPassword);
  await viewer.click("button[type=submit]");
  await viewer.waitForURL(`${base}/`);
  check(new URL(viewer.url()).origin === new URL(base).origin, `the login's next stays on weir: ${viewer.url()}`);
  check((await viewer.$$("a.button:has-text('Trigger')")).length === 0, "the viewer's DAG list has no Trigger button");
  await viewer.goto(`${base}/dags/hello_shell`);
  check((await viewer.$$("a:has-text('Trigger')")).length === 0, "the viewer's DAG page has no Trigger link");
  const refused = await viewer.evaluate(async () => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const form = await fetch("/dags/hello_shell/trigger", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf }),
      redirect: "manual",
    });
    const api = await fetch("/api/v1/dags/hello_shell/runs", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: "{}",
    });
    return [form.status, api.status];
  });
  check(refused[0] === 403 && refused[1] === 403, `the viewer's POSTs are refused with 403: ${refused}`);
  await viewer.screenshot({ path: join(shots, "viewer-dag.png"), fullPage: true });
  console.log("browser test passed");
} catch (e) {
  console.error(`browser test failed at "${step}" on ${page.url()}: ${e.stack || e}`);
  await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
