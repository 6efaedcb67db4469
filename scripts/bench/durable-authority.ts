import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Authority } from "../../ca/authority";
import { initHierarchy } from "../../ca/hierarchy";
import type { CaKeyStore } from "../../ca/key-store";
import { KEY_ALGORITHMS } from "../../ca/spki";
import { openStore } from "../../ca/store/open";

/**
 * The whole in-process issue path a client waits for, shared by bench:issue
 * and bench:hsm: a fresh CA in a temporary data directory (SQLite on disk,
 * WAL, synchronous=FULL), its hierarchy's keys made where `keys` says (file
 * keys by default), and `run` handed one P-256 workload issuance per call,
 * cycling through `spkis`, with the key backend's name.
 */
export async function withDurableAuthority<T>(
  spkis: readonly Buffer[],
  keys: ((dataDir: string) => CaKeyStore) | undefined,
  run: (issueOne: () => Promise<unknown>, keyBackend: string) => Promise<T>,
): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), "stint-bench-authority-"));
  try {
    const store = await openStore(dataDir, { create: true });
    const keyStore = keys?.(dataDir);
    await initHierarchy({
      dataDir,
      store,
      trustDomain: "bench.example",
      keyAlgorithm: "ec-p256",
      passphrase: null,
      now: new Date(),
      ...(keyStore && { keys: keyStore }),
    });
    const policy = {
      trustDomain: "bench.example",
      defaultTtlMs: 3_600_000,
      minTtlMs: 60_000,
      maxTtlMs: 86_400_000,
      backdateMs: 30_000,
      dnsSuffixes: ["svc.example"],
      keyTypes: KEY_ALGORITHMS,
    };
    const authority = await Authority.open({
      dataDir,
      store,
      policy,
      passphrase: null,
      ...(keyStore && { keys: keyStore }),
    });
    let i = 0;
    try {
      return await run(
        () =>
          authority.issue(
            {
              spiffeId: "spiffe://bench.example/ns/default/sa/bench",
              dnsNames: ["bench.svc.example"],
              spki: spkis[i++ % spkis.length]!,
              keyAlgorithm: "ec-p256",
              keyDescription: "EC P-256 key",
            },
            "bench",
          ),
        keyStore?.backend ?? "file",
      );
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}
