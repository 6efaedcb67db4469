import type { KeyObject } from "node:crypto";
import { Lru } from "../common/lru";
import { importSpki } from "../formats/jose";

/**
 * Public keys imported from SPKI DER, kept by those exact bytes. The key a
 * CSR carries today signs the renewal of its certificate tomorrow (the x5c
 * leaf of renew-cert), so keeping it saves that renewal a key import (~70 µs).
 * Equal bytes are the same key, already loaded and checked on its curve, so
 * a hit is as good as a fresh import. Bounded: the least recently used go.
 */
export const SPKI_KEY_CACHE_LIMIT = 20_000;

const keys = new Lru<KeyObject>(SPKI_KEY_CACHE_LIMIT);

/** importSpki, through the cache; throws as importSpki does (nothing is kept then). */
export function importSpkiCached(spki: Buffer): KeyObject {
  const id = spki.toString("latin1");
  let key = keys.get(id);
  if (key === undefined) {
    key = importSpki(spki);
    keys.set(id, key);
  }
  return key;
}
