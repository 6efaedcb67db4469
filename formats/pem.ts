import { StintError } from "../common/errors";

/** PEM armour (RFC 7468), shared by every side that reads or writes certificates and keys. */

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

export interface PemBlock {
  label: string;
  der: Buffer;
}

export function parsePemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const body = m[2].replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) {
      throw new StintError("ERR_PEM", `PEM block "${m[1]}" is not valid base64`);
    }
    blocks.push({ label: m[1], der: Buffer.from(body, "base64") });
  }
  return blocks;
}

/** All blocks with `label`, in order; ERR_PEM when there are none. `what` names the input for the message. */
export function pemDecodeAll(text: string, label: string, what: string): Buffer[] {
  const ders = parsePemBlocks(text)
    .filter((b) => b.label === label)
    .map((b) => b.der);
  if (ders.length === 0) throw new StintError("ERR_PEM", `${what}: no "${label}" PEM block found`);
  return ders;
}

export function pemDecode(text: string, label: string, what: string): Buffer {
  return pemDecodeAll(text, label, what)[0];
}
