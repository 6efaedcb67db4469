import { KeyObject } from "node:crypto";
import pino from "pino";
import { prettyFactory } from "pino-pretty";
import { StintError } from "./errors";

/**
 * Structured logs through pino: one JSON object per line,
 * {"level","time","component","msg",...fields}, or with format "pretty" one
 * human line per record (pino-pretty), for a terminal. Keys, tokens and
 * evidence must never reach a log, so fields are copied through a redactor
 * before pino sees them: pino's own redaction takes fixed paths, and a secret
 * may sit under any key at any depth. Secret-looking keys, key material and
 * binary data are replaced before serialization.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
/** The log.format setting: "auto" is "pretty" when stderr is a terminal, "json" otherwise. */
export const LOG_FORMATS = ["auto", "json", "pretty"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type LogFields = Readonly<Record<string, unknown>>;
type LogFn = (msg: string, fields?: LogFields) => void;

export interface Logger {
  readonly level: LogLevel;
  /** The format lines are written in ("auto" already resolved). */
  readonly format: "json" | "pretty";
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** Lets callers skip building expensive fields for a disabled level. */
  enabled(level: LogLevel): boolean;
  /** A logger adding `fields` to every line; a string `component` field replaces the component. */
  child(fields: LogFields): Logger;
}

type Stream = { write(chunk: string): unknown; isTTY?: boolean };

export interface LoggerOptions {
  level?: LogLevel;
  /** Anything with write(string); process.stderr by default. */
  stream?: Stream;
  /** "json" by default; "auto" picks "pretty" when the stream is a terminal. */
  format?: LogFormat;
  /** Colours in the pretty format; by default when the stream is a terminal and NO_COLOR is unset. */
  colors?: boolean;
  component: string;
  /** Injected for tests. */
  now?: () => Date;
}

/** "auto" resolved against the stream lines will be written to. */
export function resolveLogFormat(format: LogFormat, stream: Stream = process.stderr): "json" | "pretty" {
  if (format !== "auto") return format;
  return stream.isTTY === true ? "pretty" : "json";
}

const SECRET_KEY = /pass|secret|token|key|evidence|authorization|jws|private/i;
/**
 * An id names a secret without being one (tokenId, authorizationId, key_id,
 * entryIds): ids are kept, so a refusal can be traced to what it refused.
 */
const ID_KEY = /(?:[a-z0-9](?:Id|ID)|_id|_ID)s?$/;
/** Other names that match SECRET_KEY but carry no secret and are needed to debug issuance. */
const ALLOWED_KEYS = new Set([
  "keyAlgorithm",
  "keyType",
  "keyTypes",
  "keyUsage",
  "passphraseFile",
  "authorizationUrl",
  // keys.pkcs11.tokenLabel: which token, not its PIN
  "tokenLabel",
]);
// Secret values under innocent names: PEM private keys and JWT/JWS compact serializations.
const SECRET_VALUE = /PRIVATE KEY-----|^eyJ[\w-]*\.[\w-]*\./;
const RESERVED = new Set(["time", "level", "component", "msg"]);
const MAX_DEPTH = 8;
const MAX_ITEMS = 100;
const REDACTED = "[redacted]";

export function isSecretKey(key: string): boolean {
  // Flat config keys such as "policy.keyTypes" or "keys.backend" are judged by their last word:
  // the sections before it ("keys", "attest") name a topic, not a value.
  const last = key.slice(key.lastIndexOf(".") + 1);
  return SECRET_KEY.test(last) && !ALLOWED_KEYS.has(last) && !ID_KEY.test(last);
}

const noop: LogFn = () => {};

export function createLogger(opts: LoggerOptions): Logger {
  const stream = opts.stream ?? process.stderr;
  const format = resolveLogFormat(opts.format ?? "json", stream);
  const now = opts.now ?? (() => new Date());
  const out = pino(
    {
      level: opts.level ?? "info",
      base: null,
      // The envelope is level, time, then the record the wrapper builds: component and msg first.
      timestamp: () => `,"time":"${now().toISOString()}"`,
      formatters: { level: (label) => ({ level: label }) },
      // Fields arrive redacted and JSON-safe; pino's own error serializer would reshape an "err" field.
      serializers: { err: (value: unknown) => value },
    },
    format === "pretty" ? prettyStream(stream, opts.colors ?? defaultColors(stream)) : stream,
  );
  return build(out, format, opts.component, {});
}

function build(
  out: pino.Logger,
  format: "json" | "pretty",
  component: string,
  base: Record<string, unknown>,
): Logger {
  const withStacks = out.isLevelEnabled("debug");
  const emitter = (level: LogLevel): LogFn => {
    // Disabled levels get a shared no-op, so a suppressed call costs one function call and reads no field.
    if (!out.isLevelEnabled(level)) return noop;
    return (msg, fields) => {
      // msg inside the object (not pino's msg argument) keeps it before the fields, where people look.
      const record: Record<string, unknown> = { component, msg, ...base };
      if (fields) addFields(record, fields, withStacks);
      out[level](record);
    };
  };
  return {
    level: out.level as LogLevel,
    format,
    debug: emitter("debug"),
    info: emitter("info"),
    warn: emitter("warn"),
    error: emitter("error"),
    enabled: (level) => out.isLevelEnabled(level),
    child(fields) {
      const { component: sub, ...rest } = fields;
      const merged = { ...base };
      addFields(merged, rest, withStacks);
      return build(out, format, typeof sub === "string" ? sub : component, merged);
    },
  };
}

function defaultColors(stream: Stream): boolean {
  return stream.isTTY === true && !process.env["NO_COLOR"];
}

/**
 * One line per record for a terminal: time, level, component, message, then
 * the fields as compact JSON. Written synchronously, like the JSON lines, so a
 * crash loses no line.
 */
function prettyStream(dest: Stream, colorize: boolean): Stream {
  const pretty = prettyFactory({
    colorize,
    singleLine: true,
    translateTime: "SYS:HH:MM:ss.l",
    ignore: "component",
    messageFormat: "{component}: {msg}",
  });
  return { write: (line: string) => dest.write(pretty(line)) };
}

function addFields(into: Record<string, unknown>, fields: LogFields, withStacks: boolean): void {
  const seen = new Set<object>();
  for (const key of Object.keys(fields)) {
    const value = redact(key, fields[key], 1, seen, withStacks);
    // A field may not forge the envelope; keep it under another name instead of dropping it.
    if (value !== undefined) into[RESERVED.has(key) ? `fields.${key}` : key] = value;
  }
}

/** A JSON-safe copy of `value` with secrets replaced; `key` is the name it was found under. */
export function redact(
  key: string,
  value: unknown,
  depth = 1,
  seen = new Set<object>(),
  withStacks = false,
): unknown {
  if (isSecretKey(key)) return REDACTED;
  switch (typeof value) {
    case "string":
      return SECRET_VALUE.test(value) ? REDACTED : value;
    case "number":
      return Number.isFinite(value) ? value : String(value);
    case "bigint":
      return value.toString();
    case "boolean":
      return value;
    case "object":
      break;
    default:
      return undefined; // functions, symbols, undefined
  }
  if (value === null) return null;
  if (value instanceof KeyObject || isCryptoKey(value)) return "[key]";
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return `[binary ${value.byteLength} bytes]`;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  if (depth > MAX_DEPTH) return "[too deep]";
  if (seen.has(value)) return "[circular]";
  seen.add(value);
  try {
    const next = (k: string, v: unknown) => redact(k, v, depth + 1, seen, withStacks);
    if (value instanceof Error) return errorFields(value, next, withStacks);
    if (Array.isArray(value) || value instanceof Set) {
      const items = [...value];
      const out = items.slice(0, MAX_ITEMS).map((v) => next("", v) ?? null);
      if (items.length > MAX_ITEMS) out.push(`[${items.length - MAX_ITEMS} more]`);
      return out;
    }
    const entries = value instanceof Map ? [...value].map(([k, v]) => [String(k), v] as const) : undefined;
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (!entries && typeof toJSON === "function") return next(key, toJSON.call(value));
    const out: Record<string, unknown> = {};
    for (const [k, v] of entries ?? Object.entries(value)) {
      const r = next(k, v);
      if (r !== undefined) out[k] = r;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

function errorFields(err: Error, next: (k: string, v: unknown) => unknown, withStacks: boolean) {
  // StintError messages are secret-free by contract; other errors' codes come from Node (ENOENT, ERR_…).
  const code = err instanceof StintError ? err.code : (err as { code?: unknown }).code;
  const out: Record<string, unknown> = {
    code: typeof code === "string" ? code : err.name,
    message: err.message,
  };
  if (withStacks && err.stack) out["stack"] = err.stack;
  if (err.cause !== undefined) out["cause"] = next("cause", err.cause);
  return out;
}

function isCryptoKey(value: object): boolean {
  const ctor = (globalThis as { CryptoKey?: abstract new () => unknown }).CryptoKey;
  return ctor !== undefined && value instanceof ctor;
}
