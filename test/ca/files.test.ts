import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureDir, writeFileAtomic, writeSecretFile } from "../../common/files";
import { tempDir } from "../helpers/openssl";

const dir = tempDir("stint-files-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const mode = (p: string) => statSync(p).mode & 0o777;

test("writeFileAtomic writes with the exact mode, whatever the umask, and replaces", async () => {
  const path = join(dir, "pub.pem");
  const old = process.umask(0o077);
  try {
    await writeFileAtomic(path, "one", 0o644);
  } finally {
    process.umask(old);
  }
  expect(readFileSync(path, "utf8")).toBe("one");
  expect(mode(path)).toBe(0o644);
  await writeFileAtomic(path, Buffer.from("two"), 0o640);
  expect(readFileSync(path, "utf8")).toBe("two");
  expect(mode(path)).toBe(0o640);
  expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
});

test("writeSecretFile is 0600 and refuses to overwrite unless asked", async () => {
  const path = join(dir, "secret.pem");
  await writeSecretFile(path, "key-1");
  expect(mode(path)).toBe(0o600);
  await expect(writeSecretFile(path, "key-2")).rejects.toMatchObject({
    code: "ERR_FILE",
    message: `cannot write file: ${path} already exists; refusing to overwrite it (move it away first if it is stale)`,
  });
  expect(readFileSync(path, "utf8")).toBe("key-1");
  await writeSecretFile(path, "key-3", { overwrite: true });
  expect(readFileSync(path, "utf8")).toBe("key-3");
  expect(mode(path)).toBe(0o600);
  expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
});

test("errors name the path and the fix, never the content", async () => {
  const path = join(dir, "no-such-dir", "k.pem");
  let err: unknown;
  try {
    await writeSecretFile(path, "TOP-SECRET-CONTENT");
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({
    code: "ERR_FILE",
    message: `cannot write file: ${path} (or its directory) does not exist`,
  });
  expect(JSON.stringify(err) + String((err as Error).stack)).not.toContain("TOP-SECRET-CONTENT");
});

test("a read-only directory gives a permission hint and leaves no temp file", async () => {
  if (process.getuid?.() === 0) return; // root writes anywhere
  const ro = join(dir, "ro");
  mkdirSync(ro);
  chmodSync(ro, 0o500);
  await expect(writeFileAtomic(join(ro, "x"), "x", 0o644)).rejects.toMatchObject({
    code: "ERR_FILE",
    message: expect.stringContaining("permission denied"),
  });
  chmodSync(ro, 0o700);
  expect(readdirSync(ro)).toEqual([]);
});

test("ensureDir sets the mode exactly, also on an existing directory", async () => {
  const d = join(dir, "keys");
  await ensureDir(d, 0o700);
  expect(mode(d)).toBe(0o700);
  chmodSync(d, 0o755);
  await ensureDir(d, 0o700);
  expect(mode(d)).toBe(0o700);
  writeFileSync(join(dir, "plainfile"), "");
  await expect(ensureDir(join(dir, "plainfile"), 0o700)).rejects.toMatchObject({ code: "ERR_FILE" });
});
