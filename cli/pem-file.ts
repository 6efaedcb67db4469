import { readFile } from "node:fs/promises";
import { isStintError, StintError } from "../common/errors";
import { fileError } from "../common/files";
import { pemDecode } from "../formats/pem";

/**
 * The first PEM block with `label` in the file at `path`, with messages that
 * say which file, what it should have held (`what`) and what to give instead.
 */
export async function readPemFile(path: string, label: string, what: string, hint: string): Promise<Buffer> {
  let text: string;
  try {
    text = await readFile(path, "latin1");
  } catch (err) {
    throw fileError(err, path, `read the ${what}`);
  }
  try {
    return pemDecode(text, label, path);
  } catch (err) {
    if (!isStintError(err, "ERR_PEM")) throw err;
    throw new StintError("ERR_PEM", `${path} holds no ${what} (no "${label}" PEM block); ${hint}`);
  }
}
