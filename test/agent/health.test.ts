import { Agent, request } from "node:http";
import {
  type AgentStatus,
  agentMetrics,
  crlMetrics,
  type HealthServer,
  startHealthServer,
} from "../../agent/health";
import { CONTENT_TYPE, Registry } from "../../common/metrics";

const NOW = new Date("2030-01-01T12:00:00.000Z");
const later = (s: number) => new Date(NOW.getTime() + s * 1000);

function status(overrides: Partial<AgentStatus> = {}): AgentStatus {
  return {
    state: "ok",
    certificateNotAfter: later(3600),
    spiffeId: "spiffe://example.org/web",
    lastRenewal: later(-600),
    lastError: null,
    renewalsOk: 3,
    renewalsFailed: 1,
    bundleUpdatedAt: later(-90),
    nextRenewal: later(1800),
    crlsNextUpdate: later(1200),
    ...overrides,
  };
}

function get(
  url: string,
  method = "GET",
): Promise<{ status: number; type: string | undefined; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode!,
          type: res.headers["content-type"],
          body: Buffer.concat(chunks).toString("utf8"),
          headers: res.headers,
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

let current: AgentStatus;
let server: HealthServer;
let registry: Registry;

beforeEach(async () => {
  current = status();
  registry = new Registry();
  agentMetrics(
    registry,
    () => current,
    () => NOW,
  );
  server = await startHealthServer({
    listen: { host: "127.0.0.1", port: 0 },
    status: () => current,
    registry,
    now: () => NOW,
  });
});
afterEach(() => server.close());

describe("GET /health", () => {
  it("is 200 with the status as JSON while a valid certificate is held", async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await get(`${server.url}/health`);
    expect(res.status).toBe(200);
    expect(res.type).toBe("application/json");
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(JSON.parse(res.body)).toEqual({
      state: "ok",
      spiffeId: "spiffe://example.org/web",
      certificateNotAfter: "2030-01-01T13:00:00.000Z",
      secondsUntilExpiry: 3600,
      nextRenewal: "2030-01-01T12:30:00.000Z",
      lastRenewal: "2030-01-01T11:50:00.000Z",
      lastError: null,
      renewalsOk: 3,
      renewalsFailed: 1,
      bundleUpdatedAt: "2030-01-01T11:58:30.000Z",
      bundleAgeSeconds: 90,
      crlsNextUpdate: "2030-01-01T12:20:00.000Z",
    });
  });

  it("stays 200 while renewal fails but the certificate is still valid, showing the error", async () => {
    current = status({ state: "failing", lastError: "connect ECONNREFUSED 10.0.0.1:443" });
    const res = await get(`${server.url}/health?verbose=1`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({
      state: "failing",
      lastError: "connect ECONNREFUSED 10.0.0.1:443",
    });
  });

  it("is 503 while the agent needs new evidence, even with a certificate still within its dates", async () => {
    // Revoked and the join token spent: the workload must not count on this certificate.
    current = status({ state: "reattest-needed", lastError: "the join token was already used" });
    const res = await get(`${server.url}/health`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ state: "reattest-needed", secondsUntilExpiry: 3600 });
  });

  it("is 503 once the certificate has expired", async () => {
    current = status({ state: "expired", certificateNotAfter: later(-5) });
    const res = await get(`${server.url}/health`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ state: "expired", secondsUntilExpiry: -5 });
  });

  it("is 503 with nulls before any certificate is held", async () => {
    current = status({
      state: "starting",
      certificateNotAfter: null,
      spiffeId: null,
      lastRenewal: null,
      bundleUpdatedAt: null,
      nextRenewal: null,
      renewalsOk: 0,
      renewalsFailed: 0,
    });
    const res = await get(`${server.url}/health`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({
      state: "starting",
      certificateNotAfter: null,
      secondsUntilExpiry: null,
      bundleAgeSeconds: null,
    });
  });

  it("answers HEAD without a body, other methods with 405", async () => {
    const head = await get(`${server.url}/health`, "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
    const post = await get(`${server.url}/health`, "POST");
    expect(post.status).toBe(405);
    expect(post.headers["allow"]).toBe("GET, HEAD");
  });

  it("is 500 without detail when the status cannot be read", async () => {
    const broken = await startHealthServer({
      listen: { host: "127.0.0.1", port: 0 },
      status: () => {
        throw new Error("secret internals");
      },
      registry,
    });
    try {
      const res = await get(`${broken.url}/health`);
      expect(res.status).toBe(500);
      expect(res.body).toBe("internal error\n");
    } finally {
      await broken.close();
    }
  });
});

describe("GET /metrics", () => {
  it("renders the agent's metrics with the Prometheus content type", async () => {
    const res = await get(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.type).toBe(CONTENT_TYPE);
    const lines = res.body.split("\n");
    expect(lines).toEqual(
      expect.arrayContaining([
        "# TYPE stint_agent_certificate_expiry_seconds gauge",
        "stint_agent_certificate_expiry_seconds 3600",
        "# TYPE stint_agent_renewals_total counter",
        'stint_agent_renewals_total{result="ok"} 3',
        'stint_agent_renewals_total{result="failed"} 1',
        "stint_agent_bundle_age_seconds 90",
        `stint_agent_last_renewal_timestamp_seconds ${later(-600).getTime() / 1000}`,
        'stint_agent_state{state="ok"} 1',
        'stint_agent_state{state="failing"} 0',
        'stint_agent_state{state="reattest-needed"} 0',
      ]),
    );
  });

  it("follows the status between scrapes, and keeps the last error text out", async () => {
    current = status({ state: "failing", renewalsFailed: 4, lastError: 'boom "quoted"' });
    const body = (await get(`${server.url}/metrics`)).body;
    expect(body).toContain('stint_agent_renewals_total{result="failed"} 4');
    expect(body).toContain('stint_agent_state{state="failing"} 1');
    expect(body).toContain('stint_agent_state{state="ok"} 0');
    expect(body).not.toContain("boom");
  });

  it("reads missing facts as the alarming value", async () => {
    current = status({ certificateNotAfter: null, bundleUpdatedAt: null, lastRenewal: null, renewalsOk: 0 });
    const body = (await get(`${server.url}/metrics`)).body;
    expect(body).toContain("\nstint_agent_certificate_expiry_seconds 0\n");
    expect(body).toContain("\nstint_agent_bundle_age_seconds +Inf\n");
    expect(body).toContain("\nstint_agent_last_renewal_timestamp_seconds 0\n");
  });

  it("shows the CRLs' expiry only where the agent writes them, 0 when it holds none", async () => {
    expect((await get(`${server.url}/metrics`)).body).not.toContain("stint_agent_crl_expiry_seconds");
    crlMetrics(
      registry,
      () => current,
      () => NOW,
    );
    expect((await get(`${server.url}/metrics`)).body).toContain("\nstint_agent_crl_expiry_seconds 1200\n");
    current = status({ crlsNextUpdate: null });
    expect((await get(`${server.url}/metrics`)).body).toContain("\nstint_agent_crl_expiry_seconds 0\n");
  });
});

it("answers 404 elsewhere", async () => {
  for (const path of ["/", "/healthz", "/metrics/x", "/health/"]) {
    expect((await get(`${server.url}${path}`)).status).toBe(404);
  }
});

it("refuses an address in use with a one-line ERR_CONFIG", async () => {
  const port = Number(new URL(server.url).port);
  await expect(
    startHealthServer({ listen: { host: "127.0.0.1", port }, status: () => current, registry }),
  ).rejects.toMatchObject({
    code: "ERR_CONFIG",
    message: `cannot serve health on 127.0.0.1:${port}: the address is already in use`,
  });
});

it("close() returns while a keep-alive client is still connected", async () => {
  const own = await startHealthServer({
    listen: { host: "127.0.0.1", port: 0 },
    status: () => current,
    registry,
  });
  const agent = new Agent({ keepAlive: true });
  try {
    await new Promise((resolve) =>
      request(`${own.url}/health`, { agent }, (res) => res.resume().on("end", resolve)).end(),
    );
    await own.close();
  } finally {
    agent.destroy();
  }
});
