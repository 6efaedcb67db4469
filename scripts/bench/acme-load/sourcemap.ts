import { readFileSync } from "node:fs";

/**
 * Just enough of Source Map v3 to say which TypeScript line a position in
 * dist/*.js came from, so profile summaries name lines a reader can open.
 */

/** Per generated line: segments [generated column, original line], in column order. */
type LineSegments = Array<[number, number]>;

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** The numbers of one mappings segment (base64 VLQ, sign in the lowest bit). */
export function decodeVlq(segment: string): number[] {
  const out: number[] = [];
  let value = 0;
  let shift = 0;
  for (const ch of segment) {
    const digit = B64.indexOf(ch);
    if (digit < 0) throw new Error(`bad VLQ digit ${ch}`);
    value += (digit & 31) << shift;
    if (digit & 32) shift += 5;
    else {
      out.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return out;
}

/** Decodes `mappings` into original lines (0-based) per generated line; only the first source counts. */
export function decodeMappings(mappings: string): LineSegments[] {
  const lines: LineSegments[] = [];
  let srcLine = 0;
  for (const line of mappings.split(";")) {
    const segments: LineSegments = [];
    let genCol = 0; // resets on every generated line; the source fields carry over
    for (const seg of line.split(",")) {
      if (seg === "") continue;
      const f = decodeVlq(seg);
      genCol += f[0];
      if (f.length >= 4) {
        srcLine += f[2];
        segments.push([genCol, srcLine]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

const cache = new Map<string, LineSegments[] | null>();

/** The original 0-based line of (line, column) in the compiled file at `path`, or undefined without a map. */
export function originalLine(path: string, line: number, column: number): number | undefined {
  let lines = cache.get(path);
  if (lines === undefined) {
    try {
      lines = decodeMappings(JSON.parse(readFileSync(`${path}.map`, "utf8")).mappings as string);
    } catch {
      lines = null;
    }
    cache.set(path, lines);
  }
  const segments = lines?.[line];
  if (!segments || segments.length === 0) return undefined;
  let best = segments[0];
  for (const s of segments) if (s[0] <= column) best = s;
  return best[1];
}
