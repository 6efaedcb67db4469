import { StintError } from "../common/errors";

/**
 * A listener that could not bind, said the way the agent's health endpoint
 * says it (agent/health.ts): which address, and why in words, not an errno.
 * Anything that is not a bind error is returned unchanged.
 */
export function listenError(err: unknown, what: string, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const why =
    code === "EADDRINUSE"
      ? "the address is already in use (another stint ca serve, or another server, listens there)"
      : code === "EADDRNOTAVAIL"
        ? "no local interface has that address"
        : code === "EACCES"
          ? "permission denied (ports below 1024 need privileges)"
          : undefined;
  if (why === undefined) return err;
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  return new StintError("ERR_CONFIG", `cannot serve ${what} on ${where}: ${why}`, { cause: err });
}
