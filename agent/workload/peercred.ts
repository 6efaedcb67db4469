import type { Socket } from "node:net";
import { StintError } from "../../common/errors";
import { packageFile } from "./package-files";

/** What the kernel recorded about the process that connected to a Unix socket (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface Addon {
  peerCredentials(fd: number): PeerCredentials;
}

let addon: Addon | null = null;

function load(): Addon {
  if (addon === null) {
    const path = packageFile("native/peercred/build/Release/peercred.node");
    addon = require(path) as Addon;
  }
  return addon;
}

/** Fails loudly at startup, not at the first call, when the addon was not built (`npm ci` builds it). */
export function checkPeerCredentialsAvailable(): void {
  try {
    load();
  } catch (err) {
    throw new StintError(
      "ERR_CONFIG",
      `the Workload API needs the peercred addon (run npm ci or npm run install): ${(err as Error).message}`,
    );
  }
}

/** The peer credentials of an accepted Unix socket; Node hides the fd on its private handle. */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0)
    throw new StintError("ERR_ATTESTATION", "the connection has no file descriptor to ask the kernel about");
  try {
    return load().peerCredentials(fd);
  } catch (err) {
    throw new StintError("ERR_ATTESTATION", `the kernel gave no peer credentials: ${(err as Error).message}`);
  }
}
