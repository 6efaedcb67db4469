import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server } from "node:http";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import {
  type AgentProcess,
  currentFiles,
  fingerprint,
  freePort,
  startAgent,
  waitFor,
} from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The security console in headless Chromium (Debian's chromium, driven by
 * playwright-core) against a real `stint ca serve` with real agents: log in
 * through `stint console login`, find a workload, revoke it through the
 * confirmation and find the revocation in the audit view; rotate and taint
 * from the console and watch the fleet move as the agents renew. The same
 * pages refuse requests without the admin credential (401/403, no data) and a
 * cross-site POST, from another origin in the browser and with a forged
 * Origin from Node. Screenshots of each view go to SCREENSHOTS (below).
 */

const TD = "console.example";
const AGENTS = ["web", "api", "db"] as const;
const dir = tempDir("stint-console-e2e-");
const dataDir = join(dir, "ca");
const adminDir = join(dataDir, "admin");
/** Where the screenshots go: $STINT_CONSOLE_SCREENSHOTS, else a folder under the system temp dir. */
const SCREENSHOTS = process.env.STINT_CONSOLE_SCREENSHOTS ?? join(tmpdir(), "stint-console-screenshots");
const CHROMIUM = "/usr/bin/chromium";

let ca: ServerProcess;
let rootPem: string;
const agents: AgentProcess[] = [];
let browser: BrowserContext;
let page: Page;
let evil: Server;

const run = (args: string[]) => stint([...args, "--data-dir", dataDir, "--server", ca.url]);
function runOk(args: string[]): string {
  const r = run(args);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** A raw HTTPS request to the console with the given client credential, cookie and headers. */
function call(
  method: string,
  path: string,
  opts: {
    client?: { cert: Buffer | string; key: Buffer | string };
    headers?: Record<string, string>;
    body?: string;
  } = {},
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, ca.url),
      { method, ca: rootPem, agent: false, ...(opts.client ?? {}), headers: opts.headers ?? {} },
      (res) => {
        let data = "";
        res.on("data", (d) => {
          data += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

const adminCredential = () => ({
  cert: readFileSync(join(adminDir, "cert.pem")),
  key: readFileSync(join(adminDir, "key.pem")),
});

function loginUrl(user: string): string {
  return (JSON.parse(runOk(["console", "login", "--user", user, "--json"])) as { url: string }).url;
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(SCREENSHOTS, `console-${name}.png`), fullPage: true });
}

/** The serial of the certificate an agent holds now, as the CA writes serials (lowercase, even length). */
function leafSerial(name: string): string {
  const hex = new X509Certificate(currentFiles(join(dir, `out-${name}`)).cert).serialNumber.toLowerCase();
  return hex.length % 2 === 0 ? hex : `0${hex}`;
}

beforeAll(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  ca = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--policy-min-ttl",
    "1s",
    "--feed-poll-interval",
    "250ms",
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  for (const name of AGENTS) {
    const token = JSON.parse(
      runOk(["token", "create", "--spiffe-id", `spiffe://${TD}/svc/${name}`, "--cert-ttl", "3m", "--json"]),
    ).token as string;
    const tokenFile = join(dir, `token-${name}`);
    writeFileSync(tokenFile, token, { mode: 0o600 });
    agents.push(
      startAgent([
        "--ca-url",
        ca.url,
        "--ca-fingerprint",
        fingerprint(dataDir),
        "--spiffe-id",
        `spiffe://${TD}/svc/${name}`,
        "--join-token-file",
        tokenFile,
        "--state-dir",
        join(dir, `state-${name}`),
        "--out-dir",
        join(dir, `out-${name}`),
        "--health-listen",
        "127.0.0.1:0",
        "--backoff-base",
        "200ms",
        "--backoff-cap",
        "2s",
      ]),
    );
  }
  await waitFor(
    "every agent's first certificate",
    () =>
      AGENTS.every((a) => {
        try {
          return currentFiles(join(dir, `out-${a}`));
        } catch {
          return false;
        }
      }),
    60_000,
  );
  browser = await chromium.launchPersistentContext(mkdtempSync(join(dir, "chromium-")), {
    executablePath: CHROMIUM,
    headless: true,
    // The CA's root is not in Chromium's trust store; the page's origin is what the test checks.
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
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
  });
  page = await browser.newPage();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  evil?.close();
  await Promise.all(agents.map((a) => a.stop()));
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("security console", () => {
  it("refuses every page without the admin credential: 401 without one, 403 with a workload's, and no data", async () => {
    for (const path of [
      "/console/fleet",
      "/console/issuers",
      "/console/revocations",
      "/console/audit",
      "/console/entries",
    ]) {
      const anonymous = await call("GET", path);
      expect(anonymous.status).toBe(401);
      expect(anonymous.body).not.toContain(TD);
      const files = currentFiles(join(dir, "out-api"));
      const workload = await call("GET", path, { client: { cert: files.cert, key: files.key } });
      expect(workload.status).toBe(403);
      expect(workload.body).not.toContain(`spiffe://${TD}/svc/web`);
      const forgedCookie = await call("GET", path, { headers: { cookie: "__Host-stint-console=forged" } });
      expect(forgedCookie.status).toBe(401);
      expect(forgedCookie.body).not.toContain(`spiffe://${TD}/svc`);
    }
    // The admin certificate itself (mTLS), as the admin API takes it.
    const admin = await call("GET", "/console/fleet", { client: adminCredential() });
    expect(admin.status).toBe(200);
    expect(admin.body).toContain(`spiffe://${TD}/svc/web`);
    expect(admin.headers["content-security-policy"]).toMatch(/default-src 'none'.*script-src 'self'/);
    // A login URL works once.
    const url = loginUrl("once");
    expect((await call("GET", new URL(url).pathname + new URL(url).search)).status).toBe(303);
    expect((await call("GET", new URL(url).pathname + new URL(url).search)).status).toBe(401);
  });

  it("logs in with a one-time URL, finds a workload by ID, revokes it through the confirmation, and shows it in the audit view", async () => {
    await page.goto(loginUrl("alice"));
    expect(new URL(page.url()).pathname).toBe("/console/fleet");
    const cookies = await browser.cookies(ca.url);
    expect(cookies.find((c) => c.name === "__Host-stint-console")).toMatchObject({
      httpOnly: true,
      secure: true,
      sameSite: "Strict",
    });
    await shot("fleet");

    const web = `spiffe://${TD}/svc/web`;
    const serial = leafSerial("web");
    await page.fill('input[name="id"]', web);
    await page.click('form.filters button[type="submit"]');
    expect(await page.locator("table.certs").innerText()).toContain(web);
    expect(await page.locator("table.certs").innerText()).not.toContain(`spiffe://${TD}/svc/api`);
    await page.click(`a[href="/console/certificates/${serial}"]`);
    await shot("certificate");
    await page.click("text=Revoke this certificate…");
    const effect = await page.locator(".effect").innerText();
    expect(effect).toContain(`Revokes 1 certificate of ${web}, serial ${serial}`);
    await shot("confirm");
    await page.click("#confirm");
    expect(await page.locator(".done, .problem").innerText()).toContain(`Revoked certificate ${serial}`);

    const record = JSON.parse(runOk(["cert", "show", serial, "--json"]));
    expect(record.status).toBe("revoked");
    await page.click('nav a[href="/console/revocations"]');
    expect(await page.locator("table.revoked").innerText()).toContain(serial);

    await page.click('nav a[href="/console/audit"]');
    await page.fill('input[name="text"]', serial);
    await page.click('form.filters button[type="submit"]');
    const audit = await page.locator("table.audit").innerText();
    expect(audit).toMatch(new RegExp(`console:alice\\s+cert\\.revoke\\s+${serial}`));
    expect(await page.locator("#chain").innerText()).toMatch(/Hash chain intact through record \d+/);
    // The record links to the certificate it names.
    await page.click(`table.audit a[href="/console/certificates/${serial}"]`);
    expect(await page.locator(".status").first().innerText()).toBe("revoked");
    await page.goto(`${ca.url}/console/audit`);
    await shot("audit");
  });

  it("refuses a cross-site POST: from another origin's page in the browser, and with a forged Origin despite the cookie", async () => {
    const api = `spiffe://${TD}/svc/api`;
    const serial = leafSerial("api");
    // Another site the logged-in user visits, posting a form to the console on load.
    const port = await freePort();
    evil = createHttpServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<form id=f method=post action="${ca.url}/console/actions/revoke">
<input name=serial value="${serial}"><input name=csrf value="guess"></form>
<script>document.getElementById("f").submit()</script>`);
    }).listen(port, "127.0.0.1");
    const answer = page.waitForResponse((r) => r.url().endsWith("/console/actions/revoke"));
    await page.goto(`http://127.0.0.1:${port}/`);
    const refused = await answer;
    expect([401, 403]).toContain(refused.status());
    expect(await refused.text()).not.toContain(api);

    // From Node with the session's own cookie and token but a foreign Origin and Sec-Fetch-Site.
    const cookie = (await browser.cookies(ca.url)).find((c) => c.name === "__Host-stint-console")!;
    await page.goto(`${ca.url}/console/fleet`);
    const csrf = await page.locator('form.who input[name="csrf"]').inputValue();
    const body = new URLSearchParams({ serial, csrf }).toString();
    const headers = {
      cookie: `${cookie.name}=${cookie.value}`,
      "content-type": "application/x-www-form-urlencoded",
    };
    const foreign: Record<string, string>[] = [
      { origin: "https://evil.example" },
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site" },
    ];
    for (const extra of foreign) {
      const r = await call("POST", "/console/actions/revoke", { headers: { ...headers, ...extra }, body });
      expect(r.status).toBe(403);
    }
    // Without the token, even from our own origin.
    const noToken = await call("POST", "/console/actions/revoke", {
      headers: { ...headers, origin: ca.url },
      body: new URLSearchParams({ serial }).toString(),
    });
    expect(noToken.status).toBe(403);
    expect(JSON.parse(runOk(["cert", "show", serial, "--json"])).status).toBe("valid");
  });

  it("rotates and taints from the console, and shows the fleet moving off the old intermediate as agents renew", async () => {
    const before = (
      JSON.parse(stint(["ca", "status", "--json", "--data-dir", dataDir]).stdout).issuers as {
        id: string;
        kind: string;
        state: string;
      }[]
    ).find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    await page.goto(`${ca.url}/console/issuers`);
    await page.click("text=Rotate the intermediate…");
    expect(await page.locator(".effect").innerText()).toContain(`intermediate ${before}: active -> retired`);
    await page.click("#confirm");
    expect(await page.locator(".done, .problem").innerText()).toContain(`${before} is retired`);
    // The admin API takes only an admin certificate from the active intermediate: renew it, as after any rotation.
    expect(stint(["ca", "admin-cert", "--data-dir", dataDir]).code).toBe(0);

    await page.goto(`${ca.url}/console/issuers`);
    await page.click(`#issuer-${before} >> text=Taint…`);
    expect(await page.locator(".effect").innerText()).toMatch(
      new RegExp(`Marks intermediate ${before} as suspected compromised`),
    );
    await page.click("#confirm");
    expect(await page.locator(".done, .problem").innerText()).toContain(`Tainted ${before}`);

    // The agents renew onto the new intermediate; the progress view counts them as they go.
    const moved = async () => {
      await page.goto(`${ca.url}/console/issuers`);
      const text = await page
        .locator(`#progress-${before} .moved`)
        .innerText()
        .catch(() => "");
      const m = /^(\d+) of (\d+)$/.exec(text);
      return m ? { moved: Number(m[1]), of: Number(m[2]) } : null;
    };
    const seen: string[] = [];
    const until = Date.now() + 150_000;
    let last = await moved();
    while (Date.now() < until) {
      last = await moved();
      seen.push(JSON.stringify(last));
      if (last && last.moved === last.of) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect({ last, seen: seen.slice(0, 3) }).toMatchObject({ last: { moved: last?.of } });
    // Every workload that still renews (api, db: web's certificate was revoked) is on the new intermediate.
    const after = (
      JSON.parse(stint(["ca", "status", "--json", "--data-dir", dataDir]).stdout).issuers as {
        id: string;
        kind: string;
        state: string;
      }[]
    ).find((i) => i.kind === "intermediate" && i.state === "active")!.id;
    const onNew = await call("GET", `/console/fleet?issuer=${after}`, { client: adminCredential() });
    expect(onNew.body).toContain(`spiffe://${TD}/svc/api`);
    expect(onNew.body).toContain(`spiffe://${TD}/svc/db`);
    expect(await page.locator(`#issuer-${before} .state`).innerText()).toBe("tainted");
    await shot("issuers");

    // The audit log names the console user for both steps.
    const audit = await call("GET", `/console/audit?actor=console:alice`, { client: adminCredential() });
    expect(audit.body).toContain("issuer.taint");
  }, 240_000);

  it("shows the revocations and feed view and the entries with their tokens, without secrets", async () => {
    await page.goto(`${ca.url}/console/revocations`);
    expect(Number(await page.locator("#feed-sequence").innerText())).toBeGreaterThan(1);
    await shot("revocations");
    // One token nobody has used yet, beside the agents' spent ones.
    const unused = JSON.parse(
      runOk(["token", "create", "--spiffe-id", `spiffe://${TD}/svc/later`, "--ttl", "1h", "--json"]),
    ) as { id: string; token: string };
    await page.goto(`${ca.url}/console/entries`);
    const text = await page.locator("main").innerText();
    expect(text).toContain(`spiffe://${TD}/svc/db`);
    expect(await page.locator(`#token-${unused.id} .status`).innerText()).toBe("outstanding");
    expect(await page.locator(`#token-${unused.id}`).innerText()).toContain(`spiffe://${TD}/svc/later`);
    const html = await page.content();
    for (const secret of [
      unused.token,
      ...AGENTS.map((name) => readFileSync(join(dir, `token-${name}`), "utf8")),
    ])
      expect(html).not.toContain(secret.trim());
    await shot("entries");
  });

  it("deletes an entry and revokes its certificates through the confirmation, audited as the console user", async () => {
    const db = `spiffe://${TD}/svc/db`;
    const [entry] = JSON.parse(runOk(["entry", "list", "--spiffe-id", db, "--json"])) as { id: string }[];
    const live = (JSON.parse(runOk(["cert", "list", "--spiffe-id", db, "--json"])) as CertRow[]).filter(
      (c) => c.revokedAt === null && Date.parse(c.notAfter) > Date.now(),
    );
    expect(live.length).toBeGreaterThan(0);
    await page.goto(`${ca.url}/console/entries`);
    await page.click(`#entry-${entry!.id} >> text=Delete and revoke…`);
    expect(await page.locator(".effect").innerText()).toMatch(
      new RegExp(
        `Deletes entry ${entry!.id}[\\s\\S]*Revokes its ${live.length} live certificate\\(s\\) \\(reason privilegeWithdrawn\\)`,
      ),
    );
    await page.click("#confirm");
    expect(await page.locator(".done, .problem").innerText()).toContain(
      `Deleted entry ${entry!.id} for ${db} and revoked`,
    );

    const after = JSON.parse(runOk(["cert", "list", "--spiffe-id", db, "--json"])) as CertRow[];
    for (const c of live)
      expect(after.find((a) => a.serial === c.serial)?.revokedAt).toEqual(expect.any(String));
    expect(JSON.parse(runOk(["entry", "list", "--spiffe-id", db, "--json"]))).toEqual([]);
    const audit = await call("GET", `/console/audit?actor=console:alice`, { client: adminCredential() });
    expect(audit.body).toContain("entry.delete");
    expect(audit.body).toContain(live[0]!.serial);
  });
});

interface CertRow {
  serial: string;
  notAfter: string;
  revokedAt: string | null;
}
