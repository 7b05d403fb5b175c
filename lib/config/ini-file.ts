import { readFileSync } from "node:fs";
import { parse } from "ini";

/**
 * Reads an INI file with `ini` (npm's parser) and adds the strictness `ini` lacks, each failure one
 * ConfigError line naming the file, the section, the key and the fix:
 *
 * - a line that is neither `[section]`, `key = value`, blank nor a comment is refused (ini would
 *   silently read it as `key = true`);
 * - a key given twice in one section is refused (ini silently keeps the last);
 * - `;` or `#` inside an unquoted value is refused: ini treats it as the start of a comment and would
 *   silently cut `pre-command = a -- ; b` to `a --`. Quote the value if the character is meant;
 * - keys outside any section and dotted section names (which ini nests) are refused.
 */

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    /** "[vault] url", or "" for a file-level problem. */
    readonly where: string,
    /** What is wrong and how to fix it. */
    readonly problem: string,
  ) {
    super(`config ${source}: ${where ? `${where}: ` : ""}${problem}`);
    this.name = "ConfigError";
  }
}

/** A raw value as ini decodes it: strings, with bare `true` / `false` turned into booleans. */
export type IniValue = string | boolean;

export interface IniDocument {
  /** The file name, used in every error. */
  source: string;
  sections: Map<string, Map<string, IniValue>>;
}

export function readIniFile(path: string): IniDocument {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const why =
      code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code || "unreadable";
    throw new ConfigError(path, "", `cannot read the file (${why}); pass the right path with --config`);
  }
  return parseIni(text, path);
}

const SECTION = /^\s*\[(.*?)\]\s*$/;
const COMMENT = /^\s*[;#]/;

export function parseIni(text: string, source: string): IniDocument {
  checkLines(text, source);
  const raw = parse(text) as Record<string, unknown>;
  const sections = new Map<string, Map<string, IniValue>>();
  for (const [name, body] of Object.entries(raw)) {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new ConfigError(source, name, "key outside any section; put it under its [section]");
    }
    const keys = new Map<string, IniValue>();
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      if (typeof v === "object" && v !== null) {
        // Only `[a.b]` sections make ini nest objects.
        throw new ConfigError(source, `[${name}.${k}]`, "dotted section names are not supported");
      }
      if (Array.isArray(v)) throw new ConfigError(source, `[${name}] ${k}`, "arrays are not supported");
      keys.set(k, typeof v === "boolean" ? v : String(v ?? ""));
    }
    sections.set(name, keys);
  }
  return { source, sections };
}

function checkLines(text: string, source: string): void {
  let section = "";
  const seen = new Set<string>();
  const lines = text.split(/\r\n|\r|\n/);
  lines.forEach((line, i) => {
    const at = `line ${i + 1}`;
    if (line.trim() === "" || COMMENT.test(line)) return;
    const s = SECTION.exec(line);
    if (s) {
      section = (s[1] ?? "").trim();
      if (section === "") throw new ConfigError(source, at, "empty section name '[]'");
      return;
    }
    const eq = line.indexOf("=");
    if (eq < 0) {
      throw new ConfigError(
        source,
        at,
        `expected 'key = value' or '[section]', got ${JSON.stringify(line.trim())}`,
      );
    }
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    const where = section ? `[${section}] ${key}` : key;
    if (key === "") throw new ConfigError(source, at, "a value without a key before '='");
    if (key.endsWith("[]")) throw new ConfigError(source, where, "arrays are not supported");
    const id = `${section}\u0000${key}`;
    if (seen.has(id)) throw new ConfigError(source, where, `set twice (again on line ${i + 1}); keep one`);
    seen.add(id);
    const quoted = /^(["']).*\1$/.test(value);
    if (!quoted && /[;#]/.test(value)) {
      throw new ConfigError(
        source,
        where,
        "';' or '#' in an unquoted value starts an INI comment; quote the whole value, or drop the comment",
      );
    }
  });
}
