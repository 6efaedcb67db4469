import { readlink } from "node:fs/promises";
import { basename, join } from "node:path";
import { StintError } from "./errors";
import { fileError } from "./files";

/**
 * Reading a versioned directory as the agent publishes it (agent/atomic-dir.ts):
 * files live in a hidden version directory `..<name>`, and the `..data` link
 * names the current one. Shared by the agent and by verifiers, which read the
 * agent's output from other processes.
 */

export const DATA_LINK = "..data";
/** How often a read starts over because a newer publish retired the version it was reading. */
const READ_ATTEMPTS = 20;

/** The version `..data` names, or null when nothing is published; ERR_FILE when it is not the agent's layout. */
export async function currentVersion(dir: string): Promise<string | null> {
  let version: string;
  try {
    version = await readlink(join(dir, DATA_LINK));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw fileError(err, join(dir, DATA_LINK), "read the current version");
  }
  // The agent links ..data to a sibling directory; anything else is not its layout.
  if (basename(version) !== version || !version.startsWith("..")) {
    throw new StintError(
      "ERR_FILE",
      `${join(dir, DATA_LINK)} points to "${version}", which is not an agent version`,
    );
  }
  return version;
}

/**
 * Runs `read` on the current version's directory and returns what it read,
 * or null when nothing is published. A version is deleted only after
 * `..data` has left it and names are never reused, so a read that finds
 * `..data` unchanged afterwards saw the whole version; a read that lost files
 * (ENOENT) or saw `..data` move starts over. Other failures are thrown as
 * they are if they are Stint errors, else as ERR_FILE.
 */
export async function readCurrentVersion<T>(
  dir: string,
  read: (versionDir: string, version: string) => Promise<T>,
): Promise<{ version: string; value: T } | null> {
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    const version = await currentVersion(dir);
    if (version === null) return null;
    try {
      const value = await read(join(dir, version), version);
      if ((await currentVersion(dir)) === version) return { version, value };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw err instanceof StintError
          ? err
          : fileError(err, join(dir, version), "read the published files");
      }
    }
  }
  throw new StintError(
    "ERR_FILE",
    `cannot read ${dir}: it changed on every one of ${READ_ATTEMPTS} attempts; check that only one agent writes it`,
  );
}
