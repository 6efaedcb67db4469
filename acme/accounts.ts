import { randomBytes } from "node:crypto";
import type { AccountRecord } from "../ca/store-acme";
import { isStintError, StintError } from "../common/errors";
import {
  exportJwk,
  fromB64u,
  importJwk,
  isJwsAlgorithm,
  jsonFromB64u,
  jwkThumbprint,
  keyFitsAlgorithm,
  verifyJwsSignature,
} from "../formats/jose";
import type { AcmeContext } from "./context";
import type { Handler } from "./router";
import { accountJson, isObject, PATHS } from "./wire";

/** newAccount, account update and deactivation, keyChange (RFC 8555 7.3). */

function contactList(value: unknown): string[] {
  if (value === undefined) return [];
  if (
    !Array.isArray(value) ||
    value.length > 10 ||
    !value.every((c) => typeof c === "string" && /^mailto:[^\s,]+@[^\s,]+$/.test(c))
  ) {
    throw new StintError("ERR_MALFORMED", 'contact must be a list of at most 10 "mailto:" URLs');
  }
  return value as string[];
}

export function newAccount(ctx: AcmeContext): Handler {
  return async (req, res, url) => {
    try {
      const vr = await ctx.verify(req, url, ["jwk"]);
      if (vr.source.kind !== "jwk")
        throw new StintError("ERR_MALFORMED", "newAccount must be signed with jwk");
      const payload = isObject(vr.payload) ? vr.payload : {};
      const { thumbprint, jwk } = vr.source;
      if (payload.onlyReturnExisting === true) {
        const existing = await ctx.store.getAccountByThumbprint(thumbprint);
        if (!existing) throw new StintError("ERR_ACCOUNT_DOES_NOT_EXIST", "no account exists for this key");
        ctx.reply(res, 200, accountJson(existing, ctx.urls), { location: ctx.urls.account(existing.id) });
        return;
      }
      const now = new Date();
      const record: AccountRecord = {
        id: randomBytes(12).toString("base64url"),
        thumbprint,
        jwk: exportJwk(importJwk(jwk)),
        status: "valid",
        contact: contactList(payload.contact),
        createdAt: now,
      };
      const { account, created } = await ctx.store.createAccount(record, {
        at: now,
        actor: "acme",
        action: "account.create",
        subject: record.id,
        details: { thumbprint },
      });
      if (account.status !== "valid")
        throw new StintError("ERR_UNAUTHORIZED", `the account for this key is ${account.status}`);
      ctx.reply(res, created ? 201 : 200, accountJson(account, ctx.urls), {
        location: ctx.urls.account(account.id),
      });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

export function updateAccount(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      if (account.id !== params.id)
        throw new StintError("ERR_UNAUTHORIZED", "an account may only read or change itself");
      let current = account;
      if (isObject(vr.payload)) {
        const patch: { status?: "deactivated"; contact?: string[] } = {};
        if (vr.payload.status !== undefined) {
          if (vr.payload.status !== "deactivated")
            throw new StintError("ERR_MALFORMED", 'status may only be set to "deactivated"');
          patch.status = "deactivated";
        }
        if (vr.payload.contact !== undefined) patch.contact = contactList(vr.payload.contact);
        if (patch.status || patch.contact) {
          current = await ctx.store.updateAccount(account.id, patch, {
            at: new Date(),
            actor: ctx.urls.account(account.id),
            action: patch.status ? "account.deactivate" : "account.update",
            subject: account.id,
            details: {},
          });
        }
      }
      ctx.reply(res, 200, accountJson(current, ctx.urls), { location: ctx.urls.account(current.id) });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/** Orders in one page of an account's orders list; a Link rel="next" names the following page. */
export const ORDERS_PAGE = 100;

/** The account's orders list (RFC 8555 7.1.2.1): POST-as-GET, its own account only, invalid orders left out. */
export function listAccountOrders(ctx: AcmeContext): Handler {
  return async (req, res, url, params) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      if (account.id !== params.id)
        throw new StintError("ERR_UNAUTHORIZED", "an account may only list its own orders");
      const after = url.searchParams.get("after") ?? undefined;
      const page = await ctx.store.listAccountOrders(account.id, { after, limit: ORDERS_PAGE + 1 });
      const shown = page.slice(0, ORDERS_PAGE);
      // Link is also the directory's rel="index", which every ACME reply carries.
      const links = [`<${ctx.urls.path(PATHS.directory)}>;rel="index"`];
      if (page.length > ORDERS_PAGE) {
        links.push(`<${ctx.urls.accountOrders(account.id, shown[shown.length - 1].id)}>;rel="next"`);
      }
      ctx.reply(res, 200, { orders: shown.map((o) => ctx.urls.order(o.id)) }, { link: links });
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}

/**
 * keyChange (RFC 8555 7.3.5): the outer JWS is signed by the old key (kid);
 * its payload is an inner JWS signed by the new key (jwk) over
 * {account, oldKey}, with the same url and no nonce.
 */
export function keyChange(ctx: AcmeContext): Handler {
  return async (req, res, url) => {
    try {
      const vr = await ctx.verify(req, url, ["kid"]);
      const account = await ctx.account(vr);
      const inner = vr.payload;
      if (
        !isObject(inner) ||
        typeof inner.protected !== "string" ||
        typeof inner.payload !== "string" ||
        typeof inner.signature !== "string"
      ) {
        throw new StintError(
          "ERR_MALFORMED",
          "keyChange payload must be a flattened JWS signed by the new key",
        );
      }
      const header = jsonFromB64u(inner.protected, "inner protected header");
      if (!isObject(header))
        throw new StintError("ERR_MALFORMED", "inner protected header is not a JSON object");
      if (!isJwsAlgorithm(header.alg))
        throw new StintError(
          "ERR_BAD_SIGNATURE_ALGORITHM",
          "inner JWS uses an algorithm this CA does not accept",
        );
      if (header.kid !== undefined || header.nonce !== undefined || !isObject(header.jwk)) {
        throw new StintError("ERR_MALFORMED", "inner JWS must carry the new key as jwk, and no kid or nonce");
      }
      if (header.url !== vr.url)
        throw new StintError("ERR_UNAUTHORIZED", "inner JWS url must equal the outer url");
      const newKey = importJwk(header.jwk);
      if (!keyFitsAlgorithm(newKey, header.alg))
        throw new StintError("ERR_BAD_PUBLIC_KEY", "the new key does not fit the inner JWS algorithm");
      const signed = verifyJwsSignature(
        header.alg,
        newKey,
        `${inner.protected}.${inner.payload}`,
        fromB64u(inner.signature, "inner signature"),
      );
      if (!signed)
        throw new StintError("ERR_MALFORMED", "inner JWS signature does not verify with the new key");
      const body = jsonFromB64u(inner.payload, "inner payload");
      if (!isObject(body)) throw new StintError("ERR_MALFORMED", "inner payload is not a JSON object");
      if (body.account !== ctx.urls.account(account.id))
        throw new StintError("ERR_UNAUTHORIZED", "inner payload names another account");
      if (jwkThumbprint(importJwk(body.oldKey)) !== account.thumbprint) {
        throw new StintError("ERR_UNAUTHORIZED", "inner payload oldKey is not this account's current key");
      }
      const thumbprint = jwkThumbprint(newKey);
      try {
        const updated = await ctx.store.changeAccountKey(
          account.id,
          account.thumbprint,
          exportJwk(newKey),
          thumbprint,
          {
            at: new Date(),
            actor: ctx.urls.account(account.id),
            action: "account.key-change",
            subject: account.id,
            details: { thumbprint },
          },
        );
        ctx.reply(res, 200, accountJson(updated, ctx.urls), { location: ctx.urls.account(updated.id) });
      } catch (err) {
        if (!isStintError(err, "ERR_STORE_CONFLICT")) throw err;
        const holder = await ctx.store.getAccountByThumbprint(thumbprint);
        const location = holder ? { location: ctx.urls.account(holder.id) } : {};
        ctx.acmeHeaders(res);
        for (const [k, v] of Object.entries(location)) res.setHeader(k, v);
        const problem = {
          type: "urn:ietf:params:acme:error:malformed",
          detail: "the new key already belongs to an account",
          status: 409,
        };
        res.writeHead(409, { "content-type": "application/problem+json" });
        res.end(JSON.stringify(problem));
      }
    } catch (err) {
      ctx.fail(res, err);
    }
  };
}
