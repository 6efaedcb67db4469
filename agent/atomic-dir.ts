import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
} from "node:fs/promises";
import { basename, join } from "node:path";
import { StintError } from "../common/errors";
import { fileError, syncDir } from "../common/files";
import { DATA_LINK as DATA, readCurrentVersion } from "../common/versioned-dir";

/**
 * The agent's output directory: a whole credential set switches with one
 * rename, as Kubernetes' AtomicWriter does.
 *
 *   <dir>/..data -> ..20250102T030405.678Z.Ab3xYz   symlink; renaming over it is the switch
 *   <dir>/..20250102T030405.678Z.Ab3xYz/           one version, never modified once ..data points at it
 *       cert.pem  key.pem  bundle.pem  ...
 *   <dir>/cert.pem -> ..data/cert.pem              one symlink per published name, made once
 *   <dir>/key.pem  -> ..data/key.pem
 *
 * While publishing, `..data_tmp` (the next ..data) and `..tmp.<name>` (the next
 * top-level link) exist briefly; a crash can leave them, or an unswitched
 * version, behind, and open() removes them. Names starting with ".." belong to
 * the writer. There must be one writer per directory (nothing here locks).
 *
 * Readers. A file read is always whole, though opening `<dir>/<name>` can
 * fail with ENOENT if the version it resolved to is deleted meanwhile: retry.
 * A *set* (cert.pem with key.pem) is consistent only if every file comes from
 * one version: resolve ..data once and open `<dir>/<version>/<name>`, starting
 * over on ENOENT (a newer publish is deleting that version); a reader that
 * lists the version must also check that ..data still names it afterwards, as
 * the listing may have raced the deletion. readPublished() does both.
 * Opening `<dir>/cert.pem` and then `<dir>/key.pem` resolves ..data twice, so
 * a switch in between pairs files of two versions: Kubernetes' per-file
 * guarantee only. Such readers must re-check (the pair matches, or
 * readlink(..data) is the same before and after the opens; versions are never
 * reused) and retry, or read combined.pem / cert.p12, which hold key and chain
 * in one file. A server that loads the files only when the agent's reload hook
 * runs (after the switch) is safe while no other publish follows within its load.
 */

export interface FileSpec {
  data: string | Buffer;
  mode: number;
}

const DATA_TMP = "..data_tmp";
const LINK_TMP_PREFIX = "..tmp.";
/** `..` + compact ISO time + `.` + the 6 characters mkdtemp adds. */
const VERSION = /^\.\.\d{8}T\d{6}\.\d{3}Z\.[A-Za-z0-9]{6}$/;
const NAME = /^[A-Za-z0-9._-]+$/;

export class AtomicDir {
  private constructor(readonly dir: string) {}

  /** Creates the directory if needed (0755) and recovers from a crash: see recover(). */
  static async open(dir: string): Promise<AtomicDir> {
    try {
      // mkdir's mode goes through the umask; set it exactly, but only on a directory made here.
      const made = await mkdir(dir, { recursive: true, mode: 0o755 });
      if (made !== undefined) await chmod(dir, 0o755);
    } catch (err) {
      throw fileError(err, dir, "create the output directory");
    }
    const out = new AtomicDir(dir);
    await out.recover();
    return out;
  }

  /**
   * Writes every file into a new version, switches ..data to it, makes the
   * top-level links, drops links of names no longer published and deletes the
   * previous version. Returns the version's name. An error before the switch
   * leaves the previous set published; one after it, the new set.
   */
  async publish(files: Record<string, FileSpec>): Promise<string> {
    const names = checkFiles(files);
    const version = await this.writeVersion(files, names);
    await this.switchTo(version);
    // From here on the new set is published; a failure below is reported but changes nothing readers see.
    await this.linkNames(names);
    await this.unlinkStale(new Set(names));
    await this.removeStrays(version);
    await this.syncTop();
    return version;
  }

  /** The files of the current version, or null when nothing was published yet. */
  readCurrent(): Promise<Map<string, Buffer> | null> {
    return readPublished(this.dir);
  }

  /**
   * Removes what a crash left behind: versions and temporary symlinks that
   * ..data does not point to. Then makes the top-level links agree with the
   * current version, since a crash may have come between the switch and them.
   */
  private async recover(): Promise<void> {
    const current = await this.currentVersion();
    if (current !== null && !VERSION.test(current)) {
      throw new StintError(
        "ERR_FILE",
        `cannot use ${join(this.dir, DATA)}: it points to "${current}", which this agent did not write; move the directory's contents away`,
      );
    }
    await this.removeStrays(current);
    const names = current === null ? [] : await this.versionNames(current);
    await this.linkNames(names);
    await this.unlinkStale(new Set(names));
    await this.syncTop();
  }

  /** Removes every version except `keep`, and the temporary symlinks. */
  private async removeStrays(keep: string | null): Promise<void> {
    for (const entry of await this.entries()) {
      const stray = entry === DATA_TMP || entry.startsWith(LINK_TMP_PREFIX) || VERSION.test(entry);
      if (stray && entry !== keep) await this.remove(entry);
    }
  }

  private async currentVersion(): Promise<string | null> {
    const path = join(this.dir, DATA);
    try {
      return await readlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return null;
      if (code === "EINVAL") {
        throw new StintError("ERR_FILE", `cannot use ${path}: it is not a symlink; move it away`, {
          cause: err,
        });
      }
      throw fileError(err, path, "read the current version");
    }
  }

  /** A new version directory, complete and durable before anything points at it. */
  private async writeVersion(files: Record<string, FileSpec>, names: string[]): Promise<string> {
    const stamp = new Date().toISOString().replace(/[-:]/g, "");
    let path: string;
    try {
      path = await mkdtemp(join(this.dir, `..${stamp}.`));
    } catch (err) {
      throw fileError(err, this.dir, "create a version directory in the output directory");
    }
    try {
      await chmod(path, 0o755);
      for (const name of names) await writeNew(join(path, name), files[name]);
      await syncDir(path);
      // The version's own entry must be durable before the ..data rename can be.
      await syncDir(this.dir);
    } catch (err) {
      await rm(path, { recursive: true, force: true }).catch(() => undefined);
      throw err instanceof StintError ? err : fileError(err, path, "write the new version");
    }
    return basename(path);
  }

  /** The switch: a symlink to the new version renamed over ..data. */
  private async switchTo(version: string): Promise<void> {
    const tmp = join(this.dir, DATA_TMP);
    try {
      await rm(tmp, { force: true });
      await symlink(version, tmp);
      await rename(tmp, join(this.dir, DATA));
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      await rm(join(this.dir, version), { recursive: true, force: true }).catch(() => undefined);
      throw fileError(err, join(this.dir, DATA), "switch to the new version");
    }
    await this.syncTop();
  }

  /** `<name> -> ..data/<name>` for each name; links already right are left alone. */
  private async linkNames(names: string[]): Promise<void> {
    for (const name of names) {
      const path = join(this.dir, name);
      const target = `${DATA}/${name}`;
      if ((await linkTarget(path)) === target) continue;
      const tmp = join(this.dir, LINK_TMP_PREFIX + name);
      try {
        await rm(tmp, { force: true });
        await symlink(target, tmp);
        await rename(tmp, path);
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => undefined);
        throw fileError(err, path, "link a published file");
      }
    }
  }

  /** Removes top-level links into ..data whose name is not in `keep`; other entries are never touched. */
  private async unlinkStale(keep: Set<string>): Promise<void> {
    for (const entry of await this.entries()) {
      if (entry.startsWith("..") || keep.has(entry)) continue;
      const target = await linkTarget(join(this.dir, entry));
      if (target?.startsWith(`${DATA}/`)) {
        await unlink(join(this.dir, entry)).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT")
            throw fileError(err, join(this.dir, entry), "remove a file no longer published");
        });
      }
    }
  }

  private async versionNames(version: string): Promise<string[]> {
    const path = join(this.dir, version);
    try {
      return (await readdir(path)).filter((n) => isPlainName(n)).sort();
    } catch (err) {
      throw fileError(err, path, "list the current version");
    }
  }

  private async entries(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (err) {
      throw fileError(err, this.dir, "list the output directory");
    }
  }

  private async remove(entry: string): Promise<void> {
    const path = join(this.dir, entry);
    try {
      await rm(path, { recursive: true, force: true });
    } catch (err) {
      throw fileError(err, path, "remove what an interrupted publish left");
    }
  }

  private async syncTop(): Promise<void> {
    try {
      await syncDir(this.dir);
    } catch (err) {
      throw fileError(err, this.dir, "flush the output directory");
    }
  }
}

/**
 * Reads the published set of `dir` as one version, for readers in any process
 * (it never writes, so it is safe beside a running publisher). Null when
 * nothing is published.
 */
export async function readPublished(dir: string): Promise<Map<string, Buffer> | null> {
  const read = await readCurrentVersion(dir, async (versionDir) => {
    const files = new Map<string, Buffer>();
    for (const name of (await readdir(versionDir)).sort()) {
      if (isPlainName(name)) files.set(name, await readFile(join(versionDir, name)));
    }
    return files;
  });
  return read?.value ?? null;
}

function isPlainName(name: string): boolean {
  return NAME.test(name) && !name.startsWith("..") && name !== ".";
}

function checkFiles(files: Record<string, FileSpec>): string[] {
  const names = Object.keys(files).sort();
  if (names.length === 0) throw new StintError("ERR_CONFIG", "refusing to publish an empty set of files");
  for (const name of names) {
    if (!isPlainName(name)) {
      throw new StintError(
        "ERR_CONFIG",
        `cannot publish "${name}": file names are letters, digits, ".", "_" and "-", not starting with ".."`,
      );
    }
    const mode = files[name].mode;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new StintError(
        "ERR_CONFIG",
        `cannot publish "${name}": mode must be permission bits (0 to 0o777)`,
      );
    }
  }
  return names;
}

async function writeNew(path: string, spec: FileSpec): Promise<void> {
  const handle = await open(path, "wx", spec.mode);
  try {
    // chmod explicitly: open()'s mode is filtered by the umask.
    await handle.chmod(spec.mode);
    await handle.writeFile(spec.data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The target of the symlink at `path`, or null when it is missing or not a symlink. */
async function linkTarget(path: string): Promise<string | null> {
  try {
    if (!(await lstat(path)).isSymbolicLink()) return null;
    return await readlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw fileError(err, path, "inspect a published file");
  }
}
