import { StintError } from "./errors";

/** Why a listener could not bind, in words rather than an errno; undefined for errors that are not about binding. */
export function bindFailure(code: string | undefined): string | undefined {
  if (code === "EADDRINUSE") return "the address is already in use";
  if (code === "EADDRNOTAVAIL") return "no local interface has that address";
  if (code === "EACCES") return "permission denied (ports below 1024 need privileges)";
  return undefined;
}

/**
 * A listener that could not bind, as one ERR_CONFIG line: which listener,
 * which address, and why. `hint` follows the reason for an address in use.
 * Anything that is not a bind error is returned unchanged.
 */
export function listenError(err: unknown, what: string, host: string, port: number, hint = ""): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const why = bindFailure(code);
  if (why === undefined) return err;
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const more = code === "EADDRINUSE" && hint !== "" ? ` (${hint})` : "";
  return new StintError("ERR_CONFIG", `cannot serve ${what} on ${where}: ${why}${more}`, { cause: err });
}
