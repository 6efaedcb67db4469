import "reflect-metadata";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { snapshot, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Issue 19: --dry-run on the rotation steps says which issuers would change
 * and how many certificates hang on them, and leaves every byte of the data
 * directory (store, keys, audit log) as it was. Each dry run is checked at the
 * point of the runbook where the real step would go through.
 */

const root = tempDir();
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, "ca");
const env = {
  STINT_CA_PASSPHRASE: "correct horse battery staple",
  STINT_DATA_DIR: dir,
  STINT_TRUST_DOMAIN: "example.org",
  // root activate refuses for one bundle refresh after prepare; a dry run checks the same
  STINT_BUNDLE_REFRESH_HINT: "1s",
};

function ok(args: string[]): string {
  const r = stint(args, env);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
}

interface Plan {
  dryRun: true;
  step: string;
  issuers: { id: string | null; kind: string; from: string; to: string; live: number; unreplaced: number }[];
  effects: string[];
}

/** Runs the dry run twice (text, then JSON) and proves neither changed a file. */
function dryRun(args: string[]): { text: string; plan: Plan } {
  const before = snapshot(dir);
  const text = ok([...args, "--dry-run"]);
  const plan = JSON.parse(ok([...args, "--dry-run", "--json"])) as Plan;
  expect(snapshot(dir)).toEqual(before);
  expect(text).toMatch(/^dry run: stint .* would change \(nothing was changed\):/);
  return { text, plan };
}

function status(): { issuers: { id: string; kind: string; state: string }[] } {
  return JSON.parse(ok(["ca", "status", "--json"]));
}

test("each rotation step's dry run names the issuers and certificate counts, and changes nothing", async () => {
  ok(["ca", "init"]);
  for (const name of ["a", "b", "c"]) {
    ok(["ca", "issue", "--spiffe-id", `spiffe://example.org/${name}`, "--out", join(root, name)]);
  }
  const first = status().issuers.find((i) => i.kind === "intermediate" && i.state === "active")!;

  // Three workloads and the admin certificate `ca init` issued.
  const rotate = dryRun(["ca", "rotate"]);
  expect(rotate.plan.issuers).toEqual([
    { id: null, kind: "intermediate", from: "new", to: "active", live: 0, unreplaced: 0 },
    { id: first.id, kind: "intermediate", from: "active", to: "retired", live: 4, unreplaced: 4 },
  ]);
  expect(rotate.text).toContain(
    `intermediate ${first.id}: active -> retired (4 live certificates, 4 not replaced)`,
  );
  ok(["ca", "rotate"]);
  ok(["ca", "admin-cert"]);

  // The admin certificate and one workload move to the new intermediate: no longer unreplaced.
  ok(["ca", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", join(root, "a2")]);
  const taint = dryRun(["ca", "taint", first.id]);
  expect(taint.plan.issuers).toEqual([
    { id: first.id, kind: "intermediate", from: "retired", to: "tainted", live: 4, unreplaced: 2 },
  ]);
  ok(["ca", "taint", first.id]);

  const revoke = dryRun(["ca", "revoke-issuer", first.id, "--force"]);
  expect(revoke.plan.issuers).toEqual([
    { id: first.id, kind: "intermediate", from: "tainted", to: "revoked", live: 4, unreplaced: 2 },
  ]);
  expect(revoke.text).toContain("CRL is re-signed");
  // Without --force the dry run refuses as the step would, and still changes nothing.
  const before = snapshot(dir);
  const refused = stint(["ca", "revoke-issuer", first.id, "--dry-run"], env);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain("2 of 4 live certificates");
  expect(snapshot(dir)).toEqual(before);

  ok(["ca", "root", "prepare"]);
  const oldRoot = status().issuers.find((i) => i.kind === "root" && i.state === "active")!;
  const newRoot = status().issuers.find((i) => i.kind === "root" && i.state === "prepared")!;
  await new Promise((r) => setTimeout(r, 1100)); // one bundle refresh hint
  const second = status().issuers.find((i) => i.kind === "intermediate" && i.state === "active")!;
  const activate = dryRun(["ca", "root", "activate"]);
  expect(activate.plan.issuers).toEqual([
    { id: newRoot.id, kind: "root", from: "prepared", to: "active", live: 0, unreplaced: 0 },
    { id: null, kind: "intermediate", from: "new", to: "active", live: 0, unreplaced: 0 },
    { id: second.id, kind: "intermediate", from: "active", to: "retired", live: 2, unreplaced: 2 },
  ]);
  expect(activate.text).toContain(`root ${oldRoot.id} cross-signs root ${newRoot.id}`);
  ok(["ca", "root", "activate"]);

  // Under the old root: the first intermediate (4 live, 2 replaced) and the second (2 live, none replaced).
  const retire = dryRun(["ca", "root", "retire", "--force"]);
  expect(retire.plan.issuers).toEqual([
    { id: oldRoot.id, kind: "root", from: "active", to: "retired", live: 6, unreplaced: 4 },
  ]);
  ok(["ca", "root", "retire", "--force"]);
  expect(status().issuers.find((i) => i.id === oldRoot.id)!.state).toBe("retired");
});
