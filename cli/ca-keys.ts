import { CaKeyStore, type KeyToken } from "../ca/key-store";
import type { CaConfig } from "./ca-config";

/**
 * The CA's key store from its settings (keys.backend, keys.pkcs11.*): one per
 * loaded configuration, so a server's authority and its rotation steps share
 * one token login and its session pool.
 */

const stores = new WeakMap<CaConfig, CaKeyStore>();

/** The keys.pkcs11.slot setting: "" picks the token by label. */
function slotOf(cfg: CaConfig): number | null {
  const text = cfg["keys.pkcs11.slot"];
  return text === "" ? null : Number(text);
}

export function keyStoreFrom(cfg: CaConfig, passphrase: string | null): CaKeyStore {
  const known = stores.get(cfg);
  if (known && known.passphrase === passphrase) return known;
  const module = cfg["keys.pkcs11.module"];
  const store = new CaKeyStore({
    dataDir: cfg.dataDir,
    passphrase,
    backend: cfg["keys.backend"],
    openToken: module === "" ? null : () => openToken(cfg),
  });
  stores.set(cfg, store);
  return store;
}

async function openToken(cfg: CaConfig): Promise<KeyToken> {
  // Loaded only when a token is configured: file-key CAs never load the native binding.
  const { Pkcs11Token, resolvePin } = await import("../ca/pkcs11");
  const pin = await resolvePin({ env: process.env, pinFile: cfg["keys.pkcs11.pinFile"] || null });
  return Pkcs11Token.open({
    module: cfg["keys.pkcs11.module"],
    tokenLabel: cfg["keys.pkcs11.tokenLabel"] || null,
    slot: slotOf(cfg),
    pin,
    sessions: cfg["keys.pkcs11.sessions"],
  });
}
