import * as pkcs11js from "pkcs11js";
import { StintError } from "../../common/errors";
import type { Pkcs11Library } from "./library";
import type { Handle } from "./objects";
import type { Pkcs11Settings } from "./settings";

/** Which slot holds the configured token. */

export interface FoundToken {
  slot: Handle;
  label: string;
  flags: number;
}

/** A slot handle (CK_SLOT_ID, little-endian CK_ULONG) as the number users write in keys.pkcs11.slot. */
export function slotNumber(slot: Handle): number {
  return slot.length >= 8 ? Number(slot.readBigUInt64LE(0)) : slot.readUInt32LE(0);
}

/** The initialized tokens the module shows, with their labels unpadded. */
function presentTokens(lib: Pkcs11Library): Array<FoundToken & { id: number }> {
  const out: Array<FoundToken & { id: number }> = [];
  for (const slot of lib.api.C_GetSlotList(true)) {
    const info = lib.api.C_GetTokenInfo(slot);
    if (!(info.flags & pkcs11js.CKF_TOKEN_INITIALIZED)) continue;
    out.push({ slot, id: slotNumber(slot), label: info.label.replace(/[ \0]+$/, ""), flags: info.flags });
  }
  return out;
}

/** The token settings name; ERR_CONFIG naming the tokens present when there is none (or two) to take. */
export function findToken(lib: Pkcs11Library, settings: Pkcs11Settings): FoundToken {
  const tokens = presentTokens(lib);
  const listing =
    tokens.length === 0
      ? "no initialized token is present"
      : `tokens present: ${tokens.map((t) => `"${t.label}" (slot ${t.id})`).join(", ")}`;
  if (settings.slot !== null) {
    const t = tokens.find((x) => x.id === settings.slot);
    if (!t)
      throw new StintError(
        "ERR_CONFIG",
        `no initialized PKCS#11 token in slot ${settings.slot} of ${lib.path}; ${listing}`,
      );
    if (settings.tokenLabel !== null && t.label !== settings.tokenLabel) {
      throw new StintError(
        "ERR_CONFIG",
        `slot ${settings.slot} of ${lib.path} holds token "${t.label}", not "${settings.tokenLabel}"; ${listing}`,
      );
    }
    return t;
  }
  const matches = tokens.filter((t) => t.label === settings.tokenLabel);
  if (matches.length === 0) {
    throw new StintError(
      "ERR_CONFIG",
      `no PKCS#11 token labelled "${settings.tokenLabel}" in ${lib.path}; ${listing}`,
    );
  }
  if (matches.length > 1) {
    throw new StintError(
      "ERR_CONFIG",
      `${matches.length} PKCS#11 tokens are labelled "${settings.tokenLabel}" (slots ${matches.map((t) => t.id).join(", ")}); set keys.pkcs11.slot to pick one`,
    );
  }
  return matches[0];
}
