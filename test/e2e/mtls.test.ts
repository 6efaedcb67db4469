import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import * as tls from "node:tls";
import { stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Two certificates from a real `stint ca init` + `stint ca issue` complete
 * mutual TLS with Node's own tls module and with OpenSSL's s_server/s_client.
 */

const dir = tempDir();
const env = {
  STINT_CA_PASSPHRASE: "mtls test passphrase",
  STINT_DATA_DIR: join(dir, "ca"),
  STINT_TRUST_DOMAIN: "example.org",
  STINT_POLICY_DNS_SUFFIXES: "localhost",
};
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Identity {
  key: string;
  cert: string;
  ca: string;
  keyPath: string;
  certPath: string;
}

function issue(name: string, dns: string[] = []): Identity {
  const out = join(dir, name);
  const r = stint(
    [
      "ca",
      "issue",
      "--spiffe-id",
      `spiffe://example.org/${name}`,
      ...dns.flatMap((d) => ["--dns", d]),
      "--out",
      out,
    ],
    env,
  );
  expect(r.code).toBe(0);
  return {
    key: readFileSync(join(out, "key.pem"), "utf8"),
    cert: readFileSync(join(out, "cert.pem"), "utf8"),
    ca: readFileSync(join(out, "bundle.pem"), "utf8"),
    keyPath: join(out, "key.pem"),
    certPath: join(out, "cert.pem"),
  };
}

let server: Identity;
let client: Identity;
beforeAll(() => {
  expect(stint(["ca", "init"], env).code).toBe(0);
  server = issue("server", ["localhost"]);
  client = issue("client");
});

it("Node tls server and client authenticate each other with two issued leaves", async () => {
  const seen: string[] = [];
  const srv = tls.createServer(
    { key: server.key, cert: server.cert, ca: server.ca, requestCert: true, rejectUnauthorized: true },
    (socket) => {
      seen.push(socket.getPeerCertificate().subjectaltname ?? "");
      socket.end("hello from server");
    },
  );
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  try {
    const { reply, peerSan } = await new Promise<{ reply: string; peerSan: string }>((resolve, reject) => {
      const socket = tls.connect(
        {
          host: "127.0.0.1",
          port,
          servername: "localhost",
          key: client.key,
          cert: client.cert,
          ca: client.ca,
        },
        () => {
          expect(socket.authorized).toBe(true);
        },
      );
      let reply = "";
      socket.on("data", (d) => {
        reply += d;
      });
      socket.on("end", () => resolve({ reply, peerSan: socket.getPeerCertificate().subjectaltname ?? "" }));
      socket.on("error", reject);
    });
    expect(reply).toBe("hello from server");
    expect(peerSan).toBe("URI:spiffe://example.org/server, DNS:localhost");
    expect(seen).toEqual(["URI:spiffe://example.org/client"]);
  } finally {
    srv.close();
  }
});

it("a client without a certificate is refused by the Node server", async () => {
  const srv = tls.createServer(
    { key: server.key, cert: server.cert, ca: server.ca, requestCert: true, rejectUnauthorized: true },
    (s) => s.end("x"),
  );
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  try {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: client.ca });
      socket.on("data", () => resolve("data"));
      socket.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      socket.on("end", () => resolve("end"));
    });
    expect(outcome).toMatch(/CERTIFICATE_REQUIRED|ECONNRESET|end/);
    expect(outcome).not.toBe("data");
  } finally {
    srv.close();
  }
});

/** Runs `openssl s_server` with mutual TLS until killed; resolves once it accepts connections. */
function opensslServer(port: number): Promise<ChildProcess> {
  const child = spawn("openssl", [
    "s_server",
    "-accept",
    `127.0.0.1:${port}`,
    "-cert",
    server.certPath,
    "-cert_chain",
    server.certPath,
    "-key",
    server.keyPath,
    "-CAfile",
    join(dir, "server", "bundle.pem"),
    "-Verify",
    "1",
    "-verify_return_error",
    "-rev",
  ]);
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("ACCEPT")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`openssl s_server exited ${code}`)));
  });
}

it("OpenSSL s_server verifies the Node client, and the Node client verifies OpenSSL's server", async () => {
  const probe = tls.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const child = await opensslServer(port);
  try {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect(
        {
          host: "127.0.0.1",
          port,
          servername: "localhost",
          key: client.key,
          cert: client.cert,
          ca: client.ca,
        },
        () => {
          socket.write("stint\n");
        },
      );
      socket.on("data", (d) => {
        resolve(d.toString());
        socket.end();
      });
      socket.on("error", reject);
    });
    expect(reply.trim()).toBe("tnits"); // -rev echoes the line reversed once the client is verified
  } finally {
    child.kill();
  }
});

it("OpenSSL s_client completes mutual TLS against the Node server", async () => {
  const srv = tls.createServer(
    { key: server.key, cert: server.cert, ca: server.ca, requestCert: true, rejectUnauthorized: true },
    (s) => {
      s.end(`peer ${s.getPeerCertificate().subjectaltname}\n`);
    },
  );
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  try {
    const out = await new Promise<string>((resolve) => {
      const c = spawn("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "localhost",
        "-verify_return_error",
        "-CAfile",
        join(dir, "client", "bundle.pem"),
        "-cert",
        client.certPath,
        "-cert_chain",
        client.certPath,
        "-key",
        client.keyPath,
      ]);
      // stdin stays open: s_client stops reading from the server once its own input ends.
      let text = "";
      c.stdout.on("data", (d) => {
        text += d;
        if (text.includes("peer ")) c.kill();
      });
      setTimeout(() => c.kill(), 10_000).unref();
      c.on("exit", () => resolve(text));
    });
    expect(out).toContain("Verify return code: 0 (ok)");
    expect(out).toContain("peer URI:spiffe://example.org/client");
  } finally {
    srv.close();
  }
});
