import { randomBytes } from "node:crypto";
import { chmod, link, mkdir, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { StintError } from "./errors";

/**
 * Crash-safe file writes: a reader (or a restart after power loss) sees either
 * the old file or the complete new one, never a torn write. Messages name the
 * path and the fix, never the content (which may be a key).
 */

export interface WriteOptions {
  /** Replace an existing file (default true for writeFileAtomic, false for writeSecretFile). */
  overwrite?: boolean;
}

/** Turns a Node fs error into ERR_FILE with a hint an operator can act on. */
export function fileError(err: unknown, path: string, doing: string): StintError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const hint: Record<string, string> = {
    ENOENT: `${path} (or its directory) does not exist`,
    EACCES: `permission denied on ${path}; check the owner and mode of the file and its directory`,
    EPERM: `operation not permitted on ${path}; check the owner and mode of the file and its directory`,
    EEXIST: `${path} already exists; refusing to overwrite it (move it away first if it is stale)`,
    ENOSPC: `no space left on the device holding ${path}; free some space and retry`,
    EROFS: `${path} is on a read-only file system`,
    EISDIR: `${path} is a directory, not a file`,
    ENOTDIR: `a component of ${path} is not a directory`,
  };
  const why = (code && hint[code]) ?? `${path}: ${code ?? String(err)}`;
  return new StintError("ERR_FILE", `cannot ${doing}: ${why}`, { cause: err });
}

/** fsync a directory so a rename or link inside it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` via a temp file in the same directory: write, fsync, chmod, rename, fsync dir. */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number,
  opts: WriteOptions = {},
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  let tmpExists = false;
  try {
    const handle = await open(tmp, "wx", mode);
    tmpExists = true;
    try {
      // chmod explicitly: open()'s mode is filtered by the umask.
      await handle.chmod(mode);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (opts.overwrite ?? true) {
      await rename(tmp, path);
    } else {
      // link() fails with EEXIST atomically, unlike a check followed by rename().
      await link(tmp, path);
      await unlink(tmp);
    }
    tmpExists = false;
    await syncDir(dir);
  } catch (err) {
    if (tmpExists) await unlink(tmp).catch(() => undefined);
    throw err instanceof StintError ? err : fileError(err, path, "write file");
  }
}

/** A private file (key material): mode 0600, and by default never replaces an existing file. */
export function writeSecretFile(
  path: string,
  data: string | Uint8Array,
  opts: WriteOptions = {},
): Promise<void> {
  return writeFileAtomic(path, data, 0o600, { overwrite: opts.overwrite ?? false });
}

/** Creates a directory (and parents) and sets its mode exactly, whatever the umask. */
export async function ensureDir(path: string, mode: number): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode });
    await chmod(path, mode);
  } catch (err) {
    throw fileError(err, path, "create directory");
  }
}
