import { isIP } from "node:net";
import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { SpiffeId } from "../spiffe-id.js";
import { ConfigError, type IniDocument, type IniValue } from "./ini-file.js";

/**
 * Typed, validated access to the keys of one INI section. Every problem is one ConfigError line:
 * `config <file>: [section] key: <what is wrong>; <how to fix it>`.
 */

/** The sections and keys a config file may contain. */
export type KnownKeys = Record<string, readonly string[]>;

/**
 * Unknown sections and keys are errors, not ignored: a typo such as `ulr = ...` or `[Vault]` would
 * otherwise silently fall back to a default (or to "missing" far from the actual mistake).
 */
export function checkKnownKeys(doc: IniDocument, known: KnownKeys): void {
  const sections = Object.keys(known);
  for (const [section, keys] of doc.sections) {
    const allowed = known[section];
    if (!allowed) {
      const near = closest(section, sections);
      throw new ConfigError(
        doc.source,
        `[${section}]`,
        `unknown section${near ? `; did you mean [${near}]?` : ""} (known: ${sections.map((s) => `[${s}]`).join(" ")})`,
      );
    }
    for (const key of keys.keys()) {
      if (!allowed.includes(key)) {
        const near = closest(key, allowed);
        throw new ConfigError(
          doc.source,
          `[${section}] ${key}`,
          `unknown key${near ? `; did you mean ${near}?` : ""} (known in [${section}]: ${allowed.join(", ")})`,
        );
      }
    }
  }
}

export class SectionReader {
  constructor(
    private readonly doc: IniDocument,
    readonly section: string,
  ) {}

  error(key: string, problem: string): ConfigError {
    return new ConfigError(this.doc.source, `[${this.section}] ${key}`, problem);
  }

  has(key: string): boolean {
    return this.raw(key) !== undefined;
  }

  /** The value as text, or undefined when the key is absent or empty. */
  optString(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const s = String(v).trim();
    return s === "" ? undefined : s;
  }

  /** A required non-empty value; `hint` completes "set it to ...". */
  string(key: string, hint: string): string {
    const v = this.raw(key);
    if (v === undefined) throw this.error(key, `missing; set it to ${hint}`);
    const s = String(v).trim();
    if (s === "") throw this.error(key, `empty; set it to ${hint}`);
    return s;
  }

  /** An http(s) URL without credentials, query or fragment; a trailing '/' is dropped. */
  url(key: string, hint: string): string {
    return this.checkUrl(key, this.string(key, hint), hint);
  }

  optUrl(key: string, hint: string): string | undefined {
    const v = this.optString(key);
    return v === undefined ? undefined : this.checkUrl(key, v, hint);
  }

  /** A TCP port; `what` and `example` complete "set it to <what>, e.g. <example>". */
  port(key: string, what: string, example: string, fallback?: number): number {
    const v =
      fallback !== undefined
        ? (this.optString(key) ?? String(fallback))
        : this.string(key, `${what}, e.g. ${example}`);
    if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535) {
      throw this.error(
        key,
        `${JSON.stringify(v)} is not a port; set it to a number from 1 to 65535, e.g. ${example}`,
      );
    }
    return Number(v);
  }

  /** A host name or IP address. */
  host(key: string, hint: string): string {
    return this.checkHost(key, this.string(key, hint), hint);
  }

  checkHost(key: string, v: string, hint: string): string {
    const label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    const dns = new RegExp(`^(?=.{1,253}$)${label}(?:\\.${label})*$`);
    if (!dns.test(v) && isIP(v) === 0) {
      throw this.error(key, `${JSON.stringify(v)} is not a host name or IP address; set it to ${hint}`);
    }
    return v;
  }

  /** A SPIFFE trust domain, e.g. hpcs.example.org. */
  trustDomain(key: string): string {
    const td = this.string(key, "the SPIFFE trust domain, e.g. hpcs.example.org");
    try {
      SpiffeId.of(td);
    } catch {
      throw this.error(
        key,
        `${JSON.stringify(td)} is not a trust domain; use lower-case letters, digits, '.', '_' or '-', e.g. hpcs.example.org`,
      );
    }
    return td;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined || v === "") return fallback;
    if (typeof v === "boolean") return v;
    throw this.error(key, `${JSON.stringify(v)} is not a boolean; set it to true or false`);
  }

  oneOf<T extends string>(key: string, values: readonly T[], fallback: T): T {
    const v = this.optString(key) ?? fallback;
    if (!(values as readonly string[]).includes(v)) {
      throw this.error(key, `${JSON.stringify(v)} is not allowed; set it to one of ${values.join(", ")}`);
    }
    return v as T;
  }

  /** A file path; `~/` is the home directory, relative paths are relative to the config file. */
  optPath(key: string): string | undefined {
    const v = this.optString(key);
    if (v === undefined) return undefined;
    if (/[\0\n\r]/.test(v)) throw this.error(key, "control characters in a path; fix the path");
    if (v === "~" || v.startsWith("~/")) return resolve(homedir(), v.slice(2));
    return isAbsolute(v) ? v : resolve(dirname(resolve(this.doc.source)), v);
  }

  private checkUrl(key: string, v: string, hint: string): string {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      throw this.error(key, `${JSON.stringify(v)} is not a URL; set it to ${hint}`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") {
      throw this.error(key, `${JSON.stringify(v)} is not http(s); set it to ${hint}`);
    }
    if (u.username || u.password || u.search || u.hash) {
      throw this.error(
        key,
        `${JSON.stringify(v)} must not carry credentials, a query or a fragment; set it to ${hint}`,
      );
    }
    return v.replace(/\/+$/, "");
  }

  private raw(key: string): IniValue | undefined {
    return this.doc.sections.get(this.section)?.get(key);
  }
}

/** The closest candidate by edit distance (≤ 2) or case-insensitive equality, for "did you mean". */
function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = c.toLowerCase() === word.toLowerCase() ? 0 : distance(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] ?? 0;
      row[j] = Math.min(cur + 1, (row[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] ?? 0;
}
