import type { ErrorCode } from "../../common/errors";

/** Matches a StintError by code AND message (exact text, or a pattern). */
export function stintError(code: ErrorCode, message: string | RegExp) {
  return expect.objectContaining({
    name: "StintError",
    code,
    message: typeof message === "string" ? message : expect.stringMatching(message),
  });
}

/** A literal string as a RegExp source. */
export const literal = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
