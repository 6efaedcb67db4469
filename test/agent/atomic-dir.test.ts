import { type ChildProcess, spawn } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { AtomicDir, type FileSpec, readPublished } from "../../agent/atomic-dir";
import { checkMatchingPair } from "../../agent/credentials";
import { StintError } from "../../common/errors";
import { seeded } from "../../scripts/bench/seeded";
import { tempDir } from "../helpers/openssl";
import { makePairs, type TestPair } from "./fixtures/pki";

const PUBLISHER = join(__dirname, "fixtures", "publisher.js");

const spec = (data: string, mode = 0o644): FileSpec => ({ data, mode });
const modeOf = (path: string): number => statSync(path).mode & 0o777;
/** Entries the writer owns (names starting with ".."). */
const dotted = (dir: string): string[] =>
  readdirSync(dir)
    .filter((e) => e.startsWith(".."))
    .sort();

async function stintError(p: Promise<unknown>): Promise<StintError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(StintError);
    return err as StintError;
  }
  throw new Error("expected a StintError");
}

/** Starts the publisher fixture and resolves once it is inside its publish loop. */
function startPublisher(dir: string, pairsFile: string, first: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [PUBLISHER, dir, pairsFile, String(first)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.stdout?.once("data", () => resolve(child));
    child.once("exit", (code, signal) =>
      reject(new Error(`publisher exited early (${code ?? signal}): ${stderr}`)),
    );
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

describe("AtomicDir", () => {
  let root: string;
  beforeEach(() => {
    root = tempDir("stint-atomic-");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("creates the directory with mode 0755 and has nothing published at first", async () => {
    const dir = join(root, "a", "out");
    const out = await AtomicDir.open(dir);
    expect(modeOf(dir)).toBe(0o755);
    expect(await out.readCurrent()).toBeNull();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("publishes a set, reads it back and links each name through ..data", async () => {
    const dir = join(root, "out");
    const out = await AtomicDir.open(dir);
    const version = await out.publish({ "cert.pem": spec("CERT 1\n"), "key.pem": spec("KEY 1\n", 0o600) });

    expect(version).toMatch(/^\.\.\d{8}T\d{6}\.\d{3}Z\.[A-Za-z0-9]{6}$/);
    expect(readlinkSync(join(dir, "..data"))).toBe(version);
    expect(dotted(dir)).toEqual(["..data", version].sort());
    expect(readlinkSync(join(dir, "cert.pem"))).toBe("..data/cert.pem");
    expect(readlinkSync(join(dir, "key.pem"))).toBe("..data/key.pem");
    expect(readFileSync(join(dir, "key.pem"), "utf8")).toBe("KEY 1\n");
    expect(await out.readCurrent()).toEqual(
      new Map([
        ["cert.pem", Buffer.from("CERT 1\n")],
        ["key.pem", Buffer.from("KEY 1\n")],
      ]),
    );
    expect(modeOf(join(dir, "key.pem"))).toBe(0o600);
    expect(modeOf(join(dir, "cert.pem"))).toBe(0o644);
    expect(modeOf(join(dir, version))).toBe(0o755);
  });

  it("replaces the whole set, deletes the previous version and unlinks names no longer published", async () => {
    const dir = join(root, "out");
    const out = await AtomicDir.open(dir);
    await out.publish({
      "cert.pem": spec("C1"),
      "key.pem": spec("K1", 0o600),
      "combined.pem": spec("KC1", 0o600),
    });
    // Not ours: a file and a symlink the operator put there stay.
    writeFileSync(join(dir, "notes.txt"), "mine");
    symlinkSync("/etc/hostname", join(dir, "host"));

    const v2 = await out.publish({ "cert.pem": spec("C2"), "key.pem": spec("K2", 0o600) });
    expect(dotted(dir)).toEqual(["..data", v2].sort());
    expect(readdirSync(dir).sort()).toEqual(
      ["..data", v2, "cert.pem", "host", "key.pem", "notes.txt"].sort(),
    );
    expect(readFileSync(join(dir, "cert.pem"), "utf8")).toBe("C2");
    expect([...((await out.readCurrent())?.keys() ?? [])]).toEqual(["cert.pem", "key.pem"]);

    // A name can come back.
    await out.publish({
      "cert.pem": spec("C3"),
      "key.pem": spec("K3", 0o600),
      "combined.pem": spec("KC3", 0o600),
    });
    expect(readFileSync(join(dir, "combined.pem"), "utf8")).toBe("KC3");
    expect(modeOf(join(dir, "combined.pem"))).toBe(0o600);
  });

  it("refuses names outside [A-Za-z0-9._-], names starting with '..', bad modes and an empty set", async () => {
    const dir = join(root, "out");
    const out = await AtomicDir.open(dir);
    for (const name of ["../x", "..x", "..data", "a/b", "", ".", "x y", "é.pem"]) {
      const err = await stintError(out.publish({ [name]: spec("x") }));
      expect(err.code).toBe("ERR_CONFIG");
      expect(err.message).toBe(
        `cannot publish "${name}": file names are letters, digits, ".", "_" and "-", not starting with ".."`,
      );
    }
    const mode = await stintError(out.publish({ "a.pem": spec("x", 0o4755) }));
    expect([mode.code, mode.message]).toEqual([
      "ERR_CONFIG",
      'cannot publish "a.pem": mode must be permission bits (0 to 0o777)',
    ]);
    const empty = await stintError(out.publish({}));
    expect([empty.code, empty.message]).toEqual(["ERR_CONFIG", "refusing to publish an empty set of files"]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("says what to do when the directory cannot be created", async () => {
    writeFileSync(join(root, "file"), "");
    const err = await stintError(AtomicDir.open(join(root, "file", "out")));
    expect(err.code).toBe("ERR_FILE");
    expect(err.message).toBe(
      `cannot create the output directory: a component of ${join(root, "file", "out")} is not a directory`,
    );
    expect(err.message).not.toContain("\n");
  });

  it("refuses a ..data it did not write", async () => {
    const dir = join(root, "out");
    mkdirSync(dir);
    writeFileSync(join(dir, "..data"), "");
    const notLink = await stintError(AtomicDir.open(dir));
    expect([notLink.code, notLink.message]).toEqual([
      "ERR_FILE",
      `cannot use ${join(dir, "..data")}: it is not a symlink; move it away`,
    ]);
    rmSync(join(dir, "..data"));
    symlinkSync("/etc", join(dir, "..data"));
    const foreign = await stintError(AtomicDir.open(dir));
    expect([foreign.code, foreign.message]).toEqual([
      "ERR_FILE",
      `cannot use ${join(dir, "..data")}: it points to "/etc", which this agent did not write; move the directory's contents away`,
    ]);
  });

  it("recovers from a crash: removes stray versions and temporary links, and repairs the top-level links", async () => {
    const dir = join(root, "out");
    const first = await AtomicDir.open(dir);
    const current = await first.publish({ "cert.pem": spec("C1"), "key.pem": spec("K1", 0o600) });
    // What a writer killed at various points leaves: a half-written version, the next ..data not yet
    // renamed, a half-made top-level link, a link of a name the current set lacks, and a missing link.
    const stray = "..20240101T000000.000Z.abcDEF";
    mkdirSync(join(dir, stray));
    writeFileSync(join(dir, stray, "cert.pem"), "half");
    const unswitched = "..20240101T000001.000Z.x1y2z3";
    mkdirSync(join(dir, unswitched));
    symlinkSync(unswitched, join(dir, "..data_tmp"));
    symlinkSync("..data/key.pem", join(dir, "..tmp.key.pem"));
    symlinkSync("..data/old.pem", join(dir, "old.pem"));
    rmSync(join(dir, "cert.pem"));
    // Not the writer's: left alone.
    mkdirSync(join(dir, "..keep"));
    writeFileSync(join(dir, "notes.txt"), "mine");

    const out = await AtomicDir.open(dir);
    expect(readdirSync(dir).sort()).toEqual(
      ["..data", "..keep", current, "cert.pem", "key.pem", "notes.txt"].sort(),
    );
    expect(readFileSync(join(dir, "cert.pem"), "utf8")).toBe("C1");
    expect((await out.readCurrent())?.get("key.pem")?.toString()).toBe("K1");
  });

  it("recovers from a crash before the first switch: nothing is published", async () => {
    const dir = join(root, "out");
    mkdirSync(dir);
    mkdirSync(join(dir, "..20240101T000000.000Z.abcdef"));
    symlinkSync("..20240101T000000.000Z.abcdef", join(dir, "..data_tmp"));
    const out = await AtomicDir.open(dir);
    expect(readdirSync(dir)).toEqual([]);
    expect(await out.readCurrent()).toBeNull();
  });

  /**
   * Why readers must not open the top-level names one by one: each open resolves
   * ..data anew, so a switch between the two opens pairs a key of one version with
   * a certificate of the next. Shown here without timing luck: the switch is made
   * to fall between the two reads. The re-check (..data unchanged across the opens)
   * detects it, and reading through one resolved version never sees it.
   */
  it("pairs files of two versions when the top-level names are read across a switch", async () => {
    const pairs = makePairs(root, 2);
    const dir = join(root, "out");
    const out = await AtomicDir.open(dir);
    const publishPair = (p: TestPair) =>
      out.publish({ "cert.pem": spec(p.cert), "key.pem": spec(p.key, 0o600) });
    await publishPair(pairs[0]);

    const before = await readlink(join(dir, "..data"));
    const key = await readFile(join(dir, "key.pem"), "utf8");
    await publishPair(pairs[1]);
    const cert = await readFile(join(dir, "cert.pem"), "utf8");
    const after = await readlink(join(dir, "..data"));

    expect(checkMatchingPair(cert, key)).toBe(false);
    expect(after).not.toBe(before);
    const set = await readPublished(dir);
    expect(checkMatchingPair(set!.get("cert.pem")!.toString(), set!.get("key.pem")!.toString())).toBe(true);
  });
});

describe("AtomicDir against a real writer process", () => {
  let root: string;
  let pairs: TestPair[];
  let pairsFile: string;
  beforeAll(() => {
    root = tempDir("stint-atomic-proc-");
    pairs = makePairs(root, 5);
    pairsFile = join(root, "pairs.json");
    writeFileSync(pairsFile, JSON.stringify(pairs));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** Which pair a set read from the directory is, checking it is whole and consistent. */
  function checkSet(files: Map<string, Buffer>): number {
    const n = Number(files.get("set.txt")?.toString());
    expect(files.get("cert.pem")?.toString()).toBe(pairs[n].cert);
    expect(files.get("key.pem")?.toString()).toBe(pairs[n].key);
    expect(files.has("odd.txt")).toBe(n % 2 === 1);
    return n;
  }

  /**
   * SIGKILL at random points of a publish loop (a process crash, not a power
   * loss: the page cache survives). After each kill, recovery must leave
   * exactly one version, and the top-level names must give one whole set.
   */
  it("survives 200 kills at random points with a complete set and no strays", async () => {
    const seed = Date.now() >>> 0;
    const rand = seeded(seed);
    const dir = join(root, "crash");
    const versions = new Set<string>();
    let recovered = 0;
    for (let kill_ = 0; kill_ < 200; kill_++) {
      const child = await startPublisher(dir, pairsFile, Math.floor(rand() * pairs.length));
      await new Promise((r) => setTimeout(r, rand() * 50));
      await kill(child);

      if (dotted(dir).length > 2) recovered++;
      const out = await AtomicDir.open(dir);
      const current = await out.readCurrent();
      const context = `seed ${seed}, kill ${kill_}`;
      if (current === null) {
        expect({ context, entries: readdirSync(dir) }).toEqual({ context, entries: [] });
        continue;
      }
      const version = readlinkSync(join(dir, "..data"));
      versions.add(version);
      expect({ context, owned: dotted(dir) }).toEqual({ context, owned: ["..data", version].sort() });
      // Read the way a restarted server would: through the top-level names.
      const viaNames = new Map(
        ["cert.pem", "key.pem", "set.txt", "odd.txt"]
          .filter((name) => lstatSync(join(dir, name), { throwIfNoEntry: false }))
          .map((name) => [name, readFileSync(join(dir, name))]),
      );
      const n = checkSet(viaNames);
      expect(checkMatchingPair(pairs[n].cert, viaNames.get("key.pem")!.toString())).toBe(true);
      expect(modeOf(join(dir, "key.pem"))).toBe(0o600);
    }
    console.log(
      `crash: seed ${seed}, ${versions.size} distinct surviving versions, ${recovered} kills left strays`,
    );
    // The kills must have landed inside publishes, or this test proves nothing.
    expect(versions.size).toBeGreaterThan(50);
    expect(recovered).toBeGreaterThan(10);
    // 200 child processes: about 30 s alone, past jest's 60 s default on a loaded CI machine.
  }, 240_000);

  /**
   * While another process publishes continuously, a reader that resolves ..data
   * once (readPublished), or one that opens the top-level names and retries
   * unless ..data was the same before and after, always gets one version's pair.
   */
  it("gives concurrent readers a matching pair on every one of 2,000 reads", async () => {
    const dir = join(root, "readers");
    const out = await AtomicDir.open(dir);
    await out.publish({
      "cert.pem": spec(pairs[0].cert),
      "key.pem": spec(pairs[0].key, 0o600),
      "set.txt": spec("0"),
    });
    const child = await startPublisher(dir, pairsFile, 1);
    const seen = new Set<string>();
    let retries = 0;
    let naiveMismatches = 0;
    try {
      for (let i = 0; i < 2000; i++) {
        const files = await readPublished(dir);
        checkSet(files!);
        expect(checkMatchingPair(files!.get("cert.pem")!.toString(), files!.get("key.pem")!.toString())).toBe(
          true,
        );

        for (;;) {
          const before = await readlink(join(dir, "..data"));
          const key = await readFile(join(dir, "key.pem"), "utf8");
          const cert = await readFile(join(dir, "cert.pem"), "utf8");
          const after = await readlink(join(dir, "..data"));
          seen.add(after);
          if (before !== after) {
            retries++;
            continue;
          }
          expect(checkMatchingPair(cert, key)).toBe(true);
          break;
        }

        // Without the re-check, a switch between the two opens gives a mixed pair (not asserted: it needs timing luck).
        const key = await readFile(join(dir, "key.pem"), "utf8");
        const cert = await readFile(join(dir, "cert.pem"), "utf8");
        if (!checkMatchingPair(cert, key)) naiveMismatches++;
      }
    } finally {
      await kill(child);
    }
    expect(seen.size).toBeGreaterThan(20);
    console.log(
      `readers: ${seen.size} versions seen, ${retries} re-check retries, ${naiveMismatches} mixed naive pairs`,
    );
  });
});
