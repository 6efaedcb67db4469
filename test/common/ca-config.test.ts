import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CA_CONFIG, type CaConfig, listenProblem, loadCaConfig } from "../../cli/ca-config";
import { renderHelp, renderMarkdownTable } from "../../common/config";
import { StintError } from "../../common/errors";

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StintError);
    expect((err as StintError).code).toBe("ERR_CONFIG");
    return (err as StintError).message;
  }
  throw new Error("expected an ERR_CONFIG error");
}

describe("CA config", () => {
  it("has the documented defaults", () => {
    const cfg: CaConfig = loadCaConfig({ env: {}, flags: {} });
    expect(cfg).toEqual({
      dataDir: "./stint-data",
      trustDomain: "stint.internal",
      listen: "127.0.0.1:8443",
      serverNames: ["localhost", "127.0.0.1"],
      serverCertTtl: 86_400_000,
      passphraseFile: "",
      keyAlgorithm: "ec-p256",
      "keys.backend": "file",
      "keys.pkcs11.module": "",
      "keys.pkcs11.tokenLabel": "",
      "keys.pkcs11.slot": "",
      "keys.pkcs11.pinFile": "",
      "keys.pkcs11.sessions": 4,
      "policy.defaultTtl": 3_600_000,
      "policy.minTtl": 60_000,
      "policy.maxTtl": 86_400_000,
      "policy.backdate": 30_000,
      "policy.dnsSuffixes": [],
      "policy.keyTypes": ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"],
      "policy.dnsOnlyClientAuth": false,
      "renewal.window": "50%-75%",
      "store.url": "",
      publicUrl: "",
      "acme.maxBodyBytes": 65_536,
      "acme.nonceTtl": 300_000,
      "acme.orderTtl": 3_600_000,
      "acme.http01.port": 80,
      "acme.http01.resolveTo": "",
      "acme.http01.timeout": 10_000,
      "acme.rateLimit.perAddress": 200,
      "acme.rateLimit.perAccount": 20,
      "acme.test.badNoncePercent": 0,
      "acme.test.validationDelay": 0,
      "attest.k8sSat.issuer": "",
      "attest.k8sSat.audiences": [],
      "attest.k8sSat.publicKeyFiles": [],
      "attest.k8sSat.jwksFile": "",
      "attest.x509pop.bundleFile": "",
      "bundle.refreshHint": 300_000,
      "http.handshakeTimeout": 10_000,
      "http.headersTimeout": 10_000,
      "http.bodyTimeout": 30_000,
      "http.keepAliveTimeout": 5_000,
      "http.maxConnectionsPerAddress": 256,
      "crl.httpListen": "",
      "crl.validity": 3_600_000,
      "feed.validity": 600_000,
      "feed.pollInterval": 500,
      "log.level": "info",
      "log.format": "auto",
      "jwt.maxTtl": 300_000,
      "metrics.expiredScanInterval": 30_000,
    });
  });

  it("refuses k8s_sat settings that could never accept a token, naming what is missing", () => {
    const issuer = { STINT_ATTEST_K8S_SAT_ISSUER: "https://k8s.example" };
    expect(() => loadCaConfig({ env: issuer, flags: {} })).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message: expect.stringContaining("attest.k8sSat.audiences"),
      }),
    );
    expect(() =>
      loadCaConfig({ env: { ...issuer, STINT_ATTEST_K8S_SAT_AUDIENCES: "stint" }, flags: {} }),
    ).toThrow(expect.objectContaining({ message: expect.stringContaining("attest.k8sSat.jwksFile") }));
    expect(() => loadCaConfig({ env: { STINT_ACME_TEST_BAD_NONCE_PERCENT: "101" }, flags: {} })).toThrow(
      expect.objectContaining({ message: expect.stringContaining("percentage") }),
    );
    expect(() => loadCaConfig({ env: { STINT_PUBLIC_URL: "http://ca:80/x" }, flags: {} })).toThrow(
      expect.objectContaining({ message: expect.stringContaining("https://host[:port]") }),
    );
    // A window ending at expiry leaves no runway to ride out a CA outage.
    expect(() => loadCaConfig({ env: {}, flags: { "renewal-window": "67%-100%" } })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG", message: expect.stringContaining("must end by 90%") }),
    );
  });

  it("takes the store URL from the environment only: it carries a password", () => {
    const cfg = loadCaConfig({ env: { STINT_STORE_URL: "postgres://ca:pw@db:5432/stint" }, flags: {} });
    expect(cfg["store.url"]).toBe("postgres://ca:pw@db:5432/stint");
    expect(renderMarkdownTable(CA_CONFIG)).toContain(
      "| `store.url` | — | `STINT_STORE_URL` | string | (secret) |",
    );
    expect(() => loadCaConfig({ env: { STINT_STORE_URL: "mysql://ca:pw@db/stint" }, flags: {} })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG", message: expect.not.stringContaining("pw@") }),
    );
  });

  it("uses the names users are told about", () => {
    const table = renderMarkdownTable(CA_CONFIG);
    for (const name of [
      "`--data-dir`",
      "`STINT_DATA_DIR`",
      "`--passphrase-file`",
      "`STINT_POLICY_MAX_TTL`",
      "`--log-level`",
    ]) {
      expect(table).toContain(name);
    }
    expect(table).not.toContain("STINT_CA_PASSPHRASE`"); // only mentioned in prose, never declared
    expect(renderHelp(CA_CONFIG)).toContain("--policy-key-types <a,b,...>");
  });

  it("loads a realistic YAML file with short test TTLs", () => {
    const dir = mkdtempSync(join(tmpdir(), "stint-ca-config-"));
    try {
      const path = join(dir, "stint.yaml");
      writeFileSync(
        path,
        [
          "dataDir: /var/lib/stint",
          "trustDomain: prod.example.org",
          "listen: 0.0.0.0:0",
          "serverNames: [ca.example.org, 10.0.0.5, '::1']",
          "policy:",
          "  minTtl: 1s",
          "  defaultTtl: 5s",
          "  maxTtl: 10s",
          "  backdate: 0s",
          "  dnsSuffixes: [svc.example.org]",
          "  keyTypes: [ec-p256, ed25519]",
          "log: { level: debug }",
          "",
        ].join("\n"),
      );
      const cfg = loadCaConfig({
        file: path,
        env: { STINT_LOG_LEVEL: "warn" },
        flags: { "data-dir": "/tmp/x" },
      });
      expect(cfg).toMatchObject({
        dataDir: "/tmp/x",
        listen: "0.0.0.0:0",
        serverNames: ["ca.example.org", "10.0.0.5", "::1"],
        "policy.minTtl": 1000,
        "policy.defaultTtl": 5000,
        "policy.maxTtl": 10_000,
        "policy.backdate": 0,
        "policy.keyTypes": ["ec-p256", "ed25519"],
        "log.level": "warn",
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [
      { STINT_TRUST_DOMAIN: "spiffe://x.org" },
      'trust domain "spiffe://x.org" must be a bare name, without a scheme like spiffe://',
    ],
    [{ STINT_TRUST_DOMAIN: "x.org:443" }, 'trust domain "x.org:443" must not contain a port'],
    [{ STINT_TRUST_DOMAIN: "X.org" }, 'trust domain "X.org" must be lowercase'],
    [{ STINT_TRUST_DOMAIN: "x..org" }, 'trust domain "x..org" has an empty label'],
    [{ STINT_TRUST_DOMAIN: "x/org" }, 'trust domain "x/org" may contain only a-z, 0-9, ".", "-" and "_"'],
    [{ STINT_TRUST_DOMAIN: "" }, "trust domain is empty"],
    [
      { STINT_LISTEN: "8443" },
      '"8443" is not host:port (e.g. 127.0.0.1:8443, [::1]:8443, 0.0.0.0:8443; port 0 picks a free port)',
    ],
    [{ STINT_SERVER_NAMES: "" }, "list at least one DNS name or IP address for the CA's HTTPS certificate"],
    [{ STINT_SERVER_NAMES: "ok.example,bad_name" }, '"bad_name" is neither a DNS name nor an IP address'],
    [{ STINT_SERVER_CERT_TTL: "0s" }, "must be longer than 0s"],
    [
      { STINT_KEY_ALGORITHM: "rsa-1024" },
      '"rsa-1024" is not one of ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096',
    ],
    [
      { STINT_POLICY_KEY_TYPES: "ec-p256,dsa" },
      '"dsa" is not one of ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096',
    ],
    [{ STINT_POLICY_KEY_TYPES: "" }, "list at least one key algorithm"],
    [
      { STINT_POLICY_DNS_SUFFIXES: "*.example.org" },
      '"*.example.org": write the domain itself, e.g. svc.example.com (it also allows names under it)',
    ],
    [
      { STINT_POLICY_DNS_SUFFIXES: ".example.org" },
      '".example.org": write the domain itself, e.g. svc.example.com (it also allows names under it)',
    ],
    [{ STINT_POLICY_DNS_SUFFIXES: "Example.org" }, '"Example.org" is not a lowercase DNS domain'],
    [{ STINT_LOG_LEVEL: "trace" }, '"trace" is not one of debug, info, warn, error'],
  ])("rejects %j", (env, problem) => {
    const [name] = Object.keys(env);
    expect(configError(() => loadCaConfig({ env, flags: {} }))).toBe(`environment ${name}: ${problem}`);
  });

  it("orders minTtl ≤ defaultTtl ≤ maxTtl, naming where values came from", () => {
    expect(configError(() => loadCaConfig({ env: { STINT_POLICY_DEFAULT_TTL: "2d" }, flags: {} }))).toBe(
      "config: policy.defaultTtl 2d (from environment STINT_POLICY_DEFAULT_TTL) is longer than " +
        "policy.maxTtl 1d (from default); need policy.minTtl ≤ policy.defaultTtl ≤ policy.maxTtl",
    );
    expect(configError(() => loadCaConfig({ env: {}, flags: { "policy-min-ttl": "2h" } }))).toBe(
      "config: policy.minTtl 2h (from flag --policy-min-ttl) is longer than " +
        "policy.defaultTtl 1h (from default); need policy.minTtl ≤ policy.defaultTtl ≤ policy.maxTtl",
    );
  });

  it.each(["127.0.0.1:8443", "0.0.0.0:0", "[::1]:8443", "localhost:80", ":8443"])(
    "accepts listen %s",
    (v) => {
      expect(listenProblem(v)).toBeUndefined();
    },
  );
  it.each(["127.0.0.1", "127.0.0.1:99999", "[127.0.0.1]:80", "::1:80", "https://x:1", "a b:1"])(
    "rejects listen %s",
    (v) => {
      expect(listenProblem(v)).toBeDefined();
    },
  );
});
